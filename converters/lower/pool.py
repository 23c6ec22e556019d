"""Pooling and reductions: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Reduce*.

Pools run channels-last (1-D pools as 2-D with height 1). ONNX pads that are neither zero nor
TFLite's SAME become an explicit PAD first: zeros for AveragePool with ``count_include_pad=1``, the
lowest float for MaxPool. ``ceil_mode`` is handled by extending the end padding.
"""
from __future__ import annotations

import numpy as np

from converters.lower import padding
from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers

REDUCERS = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN",
            "ReduceSum": "SUM", "ReduceProd": "REDUCE_PROD"}


def _check_pool(node, graph):
    if len(graph.tensors[node.inputs[0]].shape) not in (3, 4):
        return "only 1-D and 2-D pooling is supported"
    if any(d != 1 for d in node.attrs.get("dilations") or []):
        return "dilated pooling is not supported"
    if len(node.outputs) > 1 and node.outputs[1]:
        return "MaxPool indices output is not supported"
    return None


def _pool_geometry(ctx, node, x):
    """(kernel, strides, pads with the ceil_mode extension, the ONNX pads, spatial size), 2-D."""
    k, s, p = list(node.attrs["kernel_shape"]), list(node.attrs["strides"]), list(node.attrs["pads"])
    if len(k) == 1:
        k, s, p = [1, k[0]], [1, s[0]], [0, p[0], 0, p[1]]
    onnx_pads = list(p)
    spatial = list(ctx.shape_of(x)[1:3])
    if node.attrs.get("ceil_mode", 0):
        out_hw = list(ctx.onnx_shape(node.outputs[0])[2:])
        out_hw = [1, out_hw[0]] if len(out_hw) == 1 else out_hw
        for i in range(2):   # extend the end padding until the last (ceil) window fits
            p[2 + i] = max(p[2 + i], (out_hw[i] - 1) * s[i] + k[i] - spatial[i] - p[i])
    return k, s, p, onnx_pads, spatial


def _pool(ctx: LowerContext, node, opcode: str) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    one_d = len(ctx.shape_of(x)) == 3
    if one_d:
        x = ctx.as_2d(x)
    k, s, p, onnx_pads, spatial = _pool_geometry(ctx, node, x)
    mode, explicit = padding.choose(spatial, k, s, [1, 1], p)
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    if opcode == "AVERAGE_POOL_2D" and include_pad and any(p):
        mode, explicit = padding.schema.Padding.VALID, p   # TFLite SAME would exclude the pads
    if explicit is not None:
        value = 0.0 if opcode == "AVERAGE_POOL_2D" or _non_negative(ctx, node.inputs[0]) \
            else float(np.finfo(np.float32).min)
        x = padding.emit_pad(ctx, x, explicit, value=value)
    final = y if not one_d else ctx.temp([ctx.shape_of(y)[0], 1, *ctx.shape_of(y)[1:]], "out_2d")
    factor = None
    if opcode == "AVERAGE_POOL_2D" and explicit is not None:
        factor = _divisor_fix(k, s, p, onnx_pads, spatial, ctx.shape_of(final)[1:3], include_pad)
    target = ctx.temp(ctx.shape_of(final), "sum_like") if factor is not None else final
    ctx.emit(opcode, [x], [target],
             options("Pool2DOptions", padding=mode, strideH=s[0], strideW=s[1], filterHeight=k[0],
                     filterWidth=k[1], fusedActivationFunction=0 if factor is not None
                     else ctx.activation(node)))
    if factor is not None:
        ctx.emit("MUL", [target, ctx.const(factor, "count_rescale")], [final],
                 options("MulOptions", fusedActivationFunction=ctx.activation(node)))
    if one_d:
        ctx.reshape(final, ctx.shape_of(y), out=y)


def _divisor_fix(k, s, p, onnx_pads, spatial, out_hw, include_pad):
    """AVERAGE_POOL_2D over an explicitly padded input divides by k*k; ONNX divides by the number
    of input elements (count_include_pad=0) or of input-and-ONNX-pad elements (=1; the ceil_mode
    extension never counts). Returns the per-window factor [1, OH, OW, 1], or None if all 1."""
    counts = []
    for i in range(2):
        lo, hi = (-onnx_pads[i], spatial[i] + onnx_pads[2 + i]) if include_pad else (0, spatial[i])
        starts = np.arange(out_hw[i]) * s[i] - p[i]
        counts.append(np.clip(starts + k[i], lo, hi) - np.clip(starts, lo, hi))
    factor = (k[0] * k[1] / np.maximum(np.outer(*counts), 1)).astype(np.float32)
    if np.all(factor == 1.0):
        return None
    return factor.reshape(1, out_hw[0], out_hw[1], 1)


NON_NEGATIVE_ACTS = {"RELU", "RELU6"}
NON_NEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax"}


def _non_negative(ctx: LowerContext, name: str) -> bool:
    """True when the value is >= 0 by construction: zero padding is then exact for MaxPool, and
    PAD (unlike PADV2 with the lowest value) is supported by XNNPACK's int8 path."""
    producer = ctx.g.producers().get(name)
    if producer is None:
        return False
    return producer.op in NON_NEGATIVE_OPS or producer.attrs.get("_activation") in NON_NEGATIVE_ACTS


@lowers("MaxPool", since=1, check=_check_pool)
def max_pool(ctx, node):
    _pool(ctx, node, "MAX_POOL_2D")


@lowers("AveragePool", since=1, check=_check_pool)
def average_pool(ctx, node):
    _pool(ctx, node, "AVERAGE_POOL_2D")


def _reduce(ctx: LowerContext, node, opcode: str, onnx_axes, keep: bool) -> None:
    name = node.inputs[0]
    x, y = ctx.value(name), ctx.output(node.outputs[0])
    axes = sorted(ctx.axis(name, a) for a in onnx_axes)
    if not axes:
        ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")
        return
    ctx.emit(opcode, [x, ctx.const(np.array(axes, np.int32), "axes")], [y],
             options("ReducerOptions", keepDims=keep))


@lowers("GlobalAveragePool", since=1)
def global_average_pool(ctx, node):
    rank = len(ctx.onnx_shape(node.inputs[0]))
    _reduce(ctx, node, "MEAN", range(2, rank), True)


@lowers("GlobalMaxPool", since=1)
def global_max_pool(ctx, node):
    rank = len(ctx.onnx_shape(node.inputs[0]))
    _reduce(ctx, node, "REDUCE_MAX", range(2, rank), True)


def _reducer(ctx, node):
    _reduce(ctx, node, REDUCERS[node.op], node.attrs["axes"], bool(node.attrs.get("keepdims", 1)))


for _op in REDUCERS:
    lowers(_op, since=1)(_reducer)
