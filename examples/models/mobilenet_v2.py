"""A MobileNetV2-style network (Sandler et al. 2018) as ONNX, with seeded random weights.

Same structure as the classic ImageNet model: a stride-2 stem, inverted residual blocks
(1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual Add when shapes allow),
BatchNorm after every conv, ReLU6 exported as Clip(0, 6), GlobalAveragePool and a Gemm
classifier. The weights are random (latency and quantization fidelity do not need a trained
model), scaled so activations stay in a realistic range.

    python -m examples.models.mobilenet_v2 out.onnx [--size 224] [--width 1.0]
"""
from __future__ import annotations

import argparse

import onnx

from examples.models.graph import GraphBuilder, rename_output

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _divisible(v: float, divisor: int = 8) -> int:
    """Round channels the way the reference implementation does (never down by > 10%)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _inverted_residual(g: GraphBuilder, x: str, cin: int, cout: int, stride: int, t: int) -> str:
    hidden = cin * t
    h = x
    if t != 1:
        h = g.relu6(g.batchnorm(g.conv(h, cin, hidden, 1), hidden))
    h = g.relu6(g.batchnorm(g.conv(h, hidden, hidden, 3, stride=stride, group=hidden), hidden))
    residual = stride == 1 and cin == cout
    # A small last-BN gain on residual branches keeps the variance of the sum from growing block
    # after block (the "zero-init residual" idea, softened so the branch still matters).
    h = g.batchnorm(g.conv(h, hidden, cout, 1, gain=1.0), cout, gamma_scale=0.4 if residual else 1.0)
    return g.node("Add", [x, h], "add") if residual else h


def build(size: int = 224, width: float = 1.0, num_classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 for a 1x3xSIZExSIZE float input; output 'logits' of shape 1xNUM_CLASSES."""
    g = GraphBuilder(seed)
    cin = _divisible(32 * width)
    h = g.relu6(g.batchnorm(g.conv("input", 3, cin, 3, stride=2), cin))
    for t, c, n, s in BLOCKS:
        cout = _divisible(c * width)
        for i in range(n):
            h = _inverted_residual(g, h, cin, cout, s if i == 0 else 1, t)
            cin = cout
    last = _divisible(1280 * max(1.0, width))
    h = g.relu6(g.batchnorm(g.conv(h, cin, last, 1), last))
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flatten", axis=1)
    out = g.gemm(h, last, num_classes)
    rename_output(g, out, "logits")
    return g.model(f"mobilenet_v2_{size}_w{width}", [("input", [1, 3, size, size])],
                   [("logits", [1, num_classes])])


def build_small(seed: int = 0) -> onnx.ModelProto:
    """The fast-test variant: 96x96 input, width 0.35, 10 classes."""
    return build(size=96, width=0.35, num_classes=10, seed=seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    onnx.save(build(a.size, a.width, a.classes, a.seed), a.out)


if __name__ == "__main__":
    main()
