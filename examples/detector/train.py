"""Train a small YOLOv8-style detector on the synthetic shapes data and export it as ONNX.

A dev script (torch from a throwaway venv; never a project dependency, never run in CI):

    /work/tvenv/bin/python -m examples.detector.train [OUT_DIR] [--epochs 20]

writes ``detector.onnx`` (opset 17, < 1 MB), and ``data.npz`` (``calib``: 16 training-distribution
images, ``holdout``: 96 held-out images, uint8 NHWC, with their boxes as ``holdout_boxes`` +
``holdout_offsets``, see ``shapes.pack_boxes``). The network has what makes int8 hard for
detectors: Conv-BN-SiLU, C2f blocks, SPPF (three chained MaxPools + Concat), an FPN/PAN neck (nearest
Upsample + Concat, strided Conv + Concat), and a head that concatenates per scale the box
regression with the class logits, then the three scales, then the decoded pixel boxes (0-64)
with the class sigmoids (0-1) -- the output form of YOLOv8's own export, ``(1, 4 + classes, 84)``.
Decode + NMS + F1 in NumPy: ``tests/converters/detection.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from examples.detector import shapes
from tests.converters import detection

DEFAULT_OUT = Path(__file__).resolve().parent
STRIDES = (8, 16, 32)
REACH = 4.0          # box sides: sigmoid * REACH cells from the anchor point


class Conv(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class C2f(nn.Module):
    """YOLOv8's CSP block: split, n bottlenecks on one half, concatenate every stage, fuse."""

    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        self.c = cout // 2
        self.cv1, self.cv2 = Conv(cin, 2 * self.c, 1), Conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(nn.Sequential(Conv(self.c, self.c), Conv(self.c, self.c)) for _ in range(n))
        self.shortcut = shortcut

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(y[-1] + m(y[-1]) if self.shortcut else m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c // 2, 1), Conv(c * 2, c, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class Detector(nn.Module):
    def __init__(self, nc=len(shapes.CLASSES), w=(16, 24, 32, 40)):
        super().__init__()
        self.nc = nc
        self.stem = nn.Sequential(Conv(3, w[0], 3, 2), Conv(w[0], w[1], 3, 2), C2f(w[1], w[1]))  # /4
        self.p3 = nn.Sequential(Conv(w[1], w[2], 3, 2), C2f(w[2], w[2]))                        # /8
        self.p4 = nn.Sequential(Conv(w[2], w[3], 3, 2), C2f(w[3], w[3]))                        # /16
        self.p5 = nn.Sequential(Conv(w[3], w[3], 3, 2), C2f(w[3], w[3]), SPPF(w[3]))            # /32
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C2f(2 * w[3], w[3], shortcut=False)
        self.n3 = C2f(w[3] + w[2], w[2], shortcut=False)
        self.d3, self.m4 = Conv(w[2], w[2], 3, 2), C2f(w[2] + w[3], w[3], shortcut=False)
        self.d4, self.m5 = Conv(w[3], w[3], 3, 2), C2f(2 * w[3], w[3], shortcut=False)
        self.box = nn.ModuleList(nn.Sequential(Conv(c, 16), nn.Conv2d(16, 4, 1)) for c in (w[2], w[3], w[3]))
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, 16), nn.Conv2d(16, nc, 1)) for c in (w[2], w[3], w[3]))
        for head in self.cls:                  # prior 1% per class: no flood of negatives at start
            nn.init.constant_(head[-1].bias, -4.6)
        anchors, strides = [], []
        for s in STRIDES:
            g = shapes.SIZE // s
            yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
            anchors.append(torch.stack([xx, yy]).reshape(2, -1).float() * s + s / 2)
            strides.append(torch.full((1, g * g), float(s)))
        self.register_buffer("anchors", torch.cat(anchors, 1)[None])     # 1 x 2 x N (pixels)
        self.register_buffer("strides", torch.cat(strides, 1)[None])     # 1 x 1 x N

    def raw(self, x):
        """Per-anchor (box logits 1 x 4 x N, class logits 1 x C x N), as the head concatenates them."""
        x = self.stem(x)
        p3 = self.p3(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        n3 = self.n3(torch.cat([self.up(n4), p3], 1))
        m4 = self.m4(torch.cat([self.d3(n3), n4], 1))
        m5 = self.m5(torch.cat([self.d4(m4), p5], 1))
        outs = [torch.cat([b(f), c(f)], 1) for f, b, c in zip((n3, m4, m5), self.box, self.cls)]
        # Static reshape sizes (as YOLOv8's export with a fixed input size has them).
        flat = torch.cat([o.reshape(o.shape[0], 4 + self.nc, (shapes.SIZE // s) ** 2)
                          for o, s in zip(outs, STRIDES)], 2)                # B x (4 + C) x N
        return flat.split((4, self.nc), 1)

    def forward(self, x):
        box, cls = self.raw(x)
        lt, rb = (torch.sigmoid(box) * (REACH * self.strides)).chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        xywh = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], 1)
        return torch.cat([xywh, torch.sigmoid(cls)], 1)


def _targets(model: Detector, boxes: list[np.ndarray]):
    """Per image and anchor: class target (B x C x N), box target (B x 4 x N, ltrb in cells/REACH)
    and a positive mask. A box belongs to the scale of its size and to the anchors of that scale
    whose point lies in its central half (at least the one nearest its centre)."""
    anchors = model.anchors[0].numpy()
    strides = model.strides[0, 0].numpy()
    n = anchors.shape[1]
    cls_t = np.zeros((len(boxes), model.nc, n), np.float32)
    box_t = np.zeros((len(boxes), 4, n), np.float32)
    pos = np.zeros((len(boxes), n), bool)
    for b, bx in enumerate(boxes):
        for x1, y1, x2, y2, c in bx:
            size = max(x2 - x1, y2 - y1)
            s = 8 if size < 16 else 16 if size < 30 else 32
            on = strides == s
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
            inside = on & (np.abs(anchors[0] - cx) <= max(hw, s / 2)) & (np.abs(anchors[1] - cy) <= max(hh, s / 2))
            if not inside.any():
                inside = on & (np.hypot(anchors[0] - cx, anchors[1] - cy) == np.hypot(
                    anchors[0][on] - cx, anchors[1][on] - cy).min())
            idx = np.flatnonzero(inside)
            cls_t[b, int(c), idx] = 1.0
            ltrb = np.stack([anchors[0, idx] - x1, anchors[1, idx] - y1, x2 - anchors[0, idx], y2 - anchors[1, idx]])
            box_t[b, :, idx] = (np.clip(ltrb / strides[idx], 0.02, REACH - 0.02) / REACH).T
            pos[b, idx] = True
    return torch.from_numpy(cls_t), torch.from_numpy(box_t), torch.from_numpy(pos)


def _loss(model: Detector, x, boxes):
    box, cls = model.raw(x)
    cls_t, box_t, pos = _targets(model, boxes)
    l_cls = nn.functional.binary_cross_entropy_with_logits(cls, cls_t, reduction="sum") / max(pos.sum(), 1)
    pred = torch.sigmoid(box).permute(0, 2, 1)[pos]
    l_box = (pred - box_t.permute(0, 2, 1)[pos]).abs().sum(1).mean() * 4 if pos.any() else 0.0
    return l_cls + l_box


def train(epochs: int, n_train: int = 3000, seed: int = 0, batch: int = 32) -> Detector:
    torch.manual_seed(seed)
    images, boxes = shapes.make(n_train, seed=seed + 1)
    x_all = torch.from_numpy(shapes.to_input(images))
    model = Detector()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    steps = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train)
        total = 0.0
        for i in range(n_train // batch):
            idx = order[i * batch:(i + 1) * batch]
            x = x_all[idx]
            if torch.rand(()) < 0.5:                    # horizontal flip, boxes mirrored
                x = x.flip(3)
                bx = [np.stack([shapes.SIZE - boxes[j][:, 2], boxes[j][:, 1], shapes.SIZE - boxes[j][:, 0],
                                boxes[j][:, 3], boxes[j][:, 4]], 1) for j in idx.tolist()]
            else:
                bx = [boxes[j] for j in idx.tolist()]
            loss = _loss(model, x, bx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1}/{epochs}: loss {total / (n_train // batch):.3f}", flush=True)
    return model.eval()


def evaluate(model: Detector, images: np.ndarray, boxes: list[np.ndarray]) -> float:
    with torch.no_grad():
        outs = [model(torch.from_numpy(shapes.to_input(images[i:i + 1]))).numpy() for i in range(len(images))]
    return detection.f1_score(outs, boxes)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = train(args.epochs)
    holdout, holdout_boxes = shapes.make(96, seed=1000)
    calib, _ = shapes.make(16, seed=2000)
    print(f"float F1 on the holdout: {evaluate(model, holdout, holdout_boxes):.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, shapes.SIZE, shapes.SIZE), str(out / "detector.onnx"),
                      input_names=["images"], output_names=["output0"], opset_version=17, dynamo=False)
    stacked, offsets = shapes.pack_boxes(holdout_boxes)
    np.savez_compressed(out / "data.npz", calib=calib, holdout=holdout, holdout_boxes=stacked,
                        holdout_offsets=offsets)
    print(f"wrote {out / 'detector.onnx'} and {out / 'data.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
