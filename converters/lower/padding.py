"""Map ONNX explicit pads onto TFLite's two padding modes (SAME / VALID) plus an explicit PAD.

TFLite's SAME pads ``total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`` with the
smaller half first (tensorflow/lite/kernels/padding.h). ONNX pads are explicit; when they match
SAME or are zero no extra op is needed, otherwise a zero PAD runs first and the op uses VALID (for
pools whose pads must not enter the window, ``pool._split_pool`` avoids padding altogether).
"""
from __future__ import annotations

import numpy as np

import ai_edge_litert.schema_py_generated as schema
from converters.geometry import same_pads


def choose(spatial: list[int], k: list[int], s: list[int], d: list[int], pads: list[int]):
    """(padding enum, explicit pads or None). ``pads`` is ONNX [b1, b2, ..., e1, e2, ...]."""
    n = len(spatial)
    if not any(pads):
        return schema.Padding.VALID, None
    if all((pads[i], pads[n + i]) == same_pads(spatial[i], k[i], s[i], d[i]) for i in range(n)):
        return schema.Padding.SAME, None
    return schema.Padding.VALID, pads


def emit_pad(ctx, src: int, pads: list[int], hint: str = "padded") -> int:
    """A zero PAD of the spatial dims of an NHWC(-like) tensor. Only zeros: int8 PAD fills with the
    zero point (exact), while PADV2 with another value (e.g. the lowest float before a MaxPool)
    made XNNPACK refuse to build some int8 graphs."""
    shape = list(ctx.shape_of(src))
    n = len(pads) // 2
    table = np.zeros((len(shape), 2), np.int32)
    for i in range(n):
        table[1 + i] = (pads[i], pads[n + i])
        shape[1 + i] += pads[i] + pads[n + i]
    out = ctx.temp(shape, hint)
    ctx.emit("PAD", [src, ctx.const(table, "paddings")], [out], schema.PadOptionsT())
    return out
