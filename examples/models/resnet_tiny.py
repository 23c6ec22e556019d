"""A small ResNet-style CNN as ONNX, with seeded random weights, for tests and the bench.

Stem conv 3x3/2 + BN + ReLU, MaxPool 3x3/2, three stages of basic blocks (two 3x3 convs,
identity or 1x1-projection shortcut, residual Add then ReLU), GlobalAveragePool, Flatten, Gemm.

    python -m examples.models.resnet_tiny out.onnx [--size 64]
"""
from __future__ import annotations

import argparse

import onnx

from examples.models.graph import GraphBuilder, rename_output

STAGES = [(16, 1), (32, 2), (64, 2)]   # (channels, stride of the first block)


def _basic_block(g: GraphBuilder, x: str, cin: int, cout: int, stride: int) -> str:
    h = g.node("Relu", [g.batchnorm(g.conv(x, cin, cout, 3, stride=stride), cout)])
    h = g.batchnorm(g.conv(h, cout, cout, 3), cout, gamma_scale=0.5)
    shortcut = x
    if stride != 1 or cin != cout:
        shortcut = g.batchnorm(g.conv(x, cin, cout, 1, stride=stride, gain=1.0), cout)
    return g.node("Relu", [g.node("Add", [shortcut, h], "add")])


def build(size: int = 64, num_classes: int = 10, blocks_per_stage: int = 2, seed: int = 1) -> onnx.ModelProto:
    """ResNet-tiny for a 1x3xSIZExSIZE float input; output 'logits' of shape 1xNUM_CLASSES."""
    g = GraphBuilder(seed)
    h = g.node("Relu", [g.batchnorm(g.conv("input", 3, 16, 3, stride=2), 16)])
    h = g.node("MaxPool", [h], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 16
    for cout, stride in STAGES:
        for i in range(blocks_per_stage):
            h = _basic_block(g, h, cin, cout, stride if i == 0 else 1)
            cin = cout
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flatten", axis=1)
    out = g.gemm(h, cin, num_classes)
    rename_output(g, out, "logits")
    return g.model(f"resnet_tiny_{size}", [("input", [1, 3, size, size])], [("logits", [1, num_classes])])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    onnx.save(build(a.size, seed=a.seed), a.out)


if __name__ == "__main__":
    main()
