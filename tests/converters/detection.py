"""Detection metrics in NumPy for the detector tests: decode, NMS, F1 at an IoU threshold.

The model output is YOLOv8's export form: ``(1, 4 + classes, anchors)``, rows 0-3 the box as
centre x, centre y, width, height in pixels, the rest per-class scores in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from examples.detector import shapes

from core.litert import make_interpreter


def decode(output: np.ndarray, conf: float = 0.5) -> np.ndarray:
    """(1, 4 + C, N) -> (k, 6) rows of x1, y1, x2, y2, score, class with score >= ``conf``."""
    pred = np.asarray(output, np.float32)[0].T                  # N x (4 + C)
    scores = pred[:, 4:]
    cls = scores.argmax(axis=1)
    best = scores[np.arange(len(pred)), cls]
    keep = best >= conf
    cx, cy, w, h = pred[keep, :4].T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, best[keep],
                     cls[keep].astype(np.float32)], axis=1)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with each row of an (n, 4) array."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(dets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class-aware greedy non-maximum suppression of decoded rows, best score first."""
    order = np.argsort(-dets[:, 4], kind="stable")
    dets, kept = dets[order], []
    alive = np.ones(len(dets), bool)
    for i in range(len(dets)):
        if not alive[i]:
            continue
        kept.append(i)
        same = (dets[:, 5] == dets[i, 5]) & alive
        same[: i + 1] = False
        alive[same] &= iou(dets[i, :4], dets[same, :4]) < threshold
    return dets[kept]


def match_counts(dets: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): greedy by score, same class, IoU >= t."""
    used = np.zeros(len(truth), bool)
    tp = 0
    for d in dets[np.argsort(-dets[:, 4], kind="stable")]:
        cand = (~used) & (truth[:, 4] == d[5])
        if not cand.any():
            continue
        overlaps = np.where(cand, iou(d[:4], truth[:, :4]) if len(truth) else 0.0, -1.0)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= threshold:
            used[j] = True
            tp += 1
    return tp, len(dets) - tp, len(truth) - tp


def f1_score(outputs: list[np.ndarray], truths: list[np.ndarray], conf: float = 0.5,
             iou_threshold: float = 0.5) -> float:
    """Detection F1 (in [0, 1]) over a data set: one model output and one (k, 5) truth per image."""
    tp = fp = fn = 0
    for out, truth in zip(outputs, truths):
        a, b, c = match_counts(nms(decode(out, conf)), truth, iou_threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    return 2 * tp / max(2 * tp + fp + fn, 1)


def run_onnx(path: Path, images: np.ndarray) -> list[np.ndarray]:
    """The model's output for each uint8 NHWC image, in onnxruntime (the float reference)."""
    import onnxruntime as ort   # host-only dependency, as in the rest of the converter tests
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, {"images": shapes.to_input(images[i:i + 1])})[0] for i in range(len(images))]


def run_litert(flat: bytes, images: np.ndarray, use_xnnpack: bool = True) -> list[np.ndarray]:
    """The same through a TFLite model with float I/O in LiteRT."""
    interp = make_interpreter(flat, use_xnnpack=use_xnnpack)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outs = []
    for i in range(len(images)):
        interp.set_tensor(inp["index"], shapes.to_input(images[i:i + 1]))
        interp.invoke()
        outs.append(interp.get_tensor(out["index"]).copy())
    return outs
