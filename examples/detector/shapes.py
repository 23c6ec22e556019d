"""A synthetic detection dataset: coloured rectangles, ellipses and triangles on noisy backgrounds.

NumPy only (the converter tests may import it; ``train.py`` needs torch). Each image is
``SIZE x SIZE`` RGB with 1-3 objects on a greyish background; the class is the object's colour
(0 red, 1 green, 2 blue, each with random shade), the shape (rectangle, ellipse, triangle) is
random, so a small network learns it in minutes on a CPU. Objects span 8-40 pixels, so
all three detector scales (strides 8, 16, 32) get work. Boxes are ``(x1, y1, x2, y2, class)`` in
pixels. Deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

SIZE = 64
CLASSES = ("red", "green", "blue")
SHAPES = ("rectangle", "ellipse", "triangle")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mask(kind: int, box, yy, xx) -> np.ndarray:
    x1, y1, x2, y2 = box
    if kind == 0:
        return (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if kind == 1:
        return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
    # triangle: apex at the top centre, base along the bottom edge
    t = (yy + 0.5 - y1) / max(y2 - y1, 1e-6)
    return (t >= 0) & (t <= 1) & (np.abs(xx + 0.5 - cx) <= t * rx)


def _image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    base = rng.uniform(60, 200) + rng.uniform(-20, 20, 3)
    tilt = rng.uniform(-40, 40, (2, 3))
    img = base + np.einsum("hw,c->hwc", yy / SIZE, tilt[0]) + np.einsum("hw,c->hwc", xx / SIZE, tilt[1])
    img += rng.normal(0, 8, img.shape)
    boxes: list[tuple] = []
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(10):
            w, h = rng.uniform(8, 40, 2)
            if max(w, h) / min(w, h) > 2.5:
                continue
            x1, y1 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            box = (x1, y1, x1 + w, y1 + h)
            if all(_iou(box, b[:4]) < 0.2 for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        colour = rng.uniform(0, 90, 3)
        colour[cls] = rng.uniform(170, 255)
        img[_mask(int(rng.integers(0, len(SHAPES))), box, yy, xx)] = colour + rng.normal(0, 6, 3)
        boxes.append((*box, cls))
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32).reshape(-1, 5)


def make(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` images (N x SIZE x SIZE x 3 uint8) and their boxes (one (k, 5) array each)."""
    rng = np.random.default_rng(seed)
    pairs = [_image(rng) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images -> the model's float input (N x 3 x SIZE x SIZE, pixels in [0, 1])."""
    return (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()


def pack_boxes(boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged box lists -> (all boxes stacked, offsets) for an npz file; ``unpack_boxes`` inverts."""
    offsets = np.cumsum([0] + [len(b) for b in boxes]).astype(np.int64)
    return np.concatenate(boxes).astype(np.float32), offsets


def unpack_boxes(stacked: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [stacked[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
