"""Pooling and reductions: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Reduce*.

Pools run channels-last (1-D pools as 2-D with height 1). ONNX pads that are neither zero nor
TFLite's SAME become an explicit PAD first: zeros for AveragePool with ``count_include_pad=1``, the
lowest float for MaxPool. ``ceil_mode`` is handled by extending the end padding.
"""
from __future__ import annotations

import math

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
    k, s, p = list(node.attrs["kernel_shape"]), list(node.attrs["strides"]), list(node.attrs["pads"])
    if len(k) == 1:
        k, s, p = [1, k[0]], [1, s[0]], [0, p[0], 0, p[1]]
    spatial = list(ctx.shape_of(x)[1:3])
    if node.attrs.get("ceil_mode", 0):
        for i in range(2):
            out = math.ceil((spatial[i] + p[i] + p[2 + i] - k[i]) / s[i]) + 1
            if (out - 1) * s[i] >= spatial[i] + p[i]:   # the last window must start inside
                out -= 1
            p[2 + i] = max(p[2 + i], (out - 1) * s[i] + k[i] - spatial[i] - p[i])
    return k, s, p, spatial


def _pool(ctx: LowerContext, node, opcode: str) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    one_d = len(ctx.shape_of(x)) == 3
    if one_d:
        n, length, c = ctx.shape_of(x)
        x = ctx.reshape(x, [n, 1, length, c], hint="as_2d")
    k, s, p, spatial = _pool_geometry(ctx, node, x)
    mode, explicit = padding.choose(spatial, k, s, [1, 1], p)
    if opcode == "AVERAGE_POOL_2D" and node.attrs.get("count_include_pad", 0) and any(p):
        mode, explicit = padding.schema.Padding.VALID, p   # TFLite SAME would exclude the pads
    # TFLite's SAME average already divides by the real-element count; explicit pads with
    # count_include_pad=0 pool over zeros and then rescale each window by k*k / real count.
    rescale = (opcode == "AVERAGE_POOL_2D" and explicit is not None
               and not node.attrs.get("count_include_pad", 0))
    if explicit is not None:
        value = 0.0 if opcode == "AVERAGE_POOL_2D" or _non_negative(ctx, node.inputs[0]) \
            else float(np.finfo(np.float32).min)
        x = padding.emit_pad(ctx, x, explicit, value=value)
    final = y if not one_d else ctx.temp([ctx.shape_of(y)[0], 1, *ctx.shape_of(y)[1:]], "out_2d")
    target = ctx.temp(ctx.shape_of(final), "sum_like") if rescale else final
    act = 0 if rescale else ctx.activation(node)
    ctx.emit(opcode, [x], [target],
             options("Pool2DOptions", padding=mode, strideH=s[0], strideW=s[1], filterHeight=k[0],
                     filterWidth=k[1], fusedActivationFunction=act))
    if rescale:
        _, oh, ow, _ = ctx.shape_of(final)
        counts = np.outer(_valid_counts(spatial[0], k[0], s[0], p[0], oh),
                          _valid_counts(spatial[1], k[1], s[1], p[1], ow))
        factor = (k[0] * k[1] / np.maximum(counts, 1)).astype(np.float32).reshape(1, oh, ow, 1)
        ctx.emit("MUL", [target, ctx.const(factor, "count_rescale")], [final],
                 options("MulOptions", fusedActivationFunction=ctx.activation(node)))
    if one_d:
        ctx.reshape(target, ctx.shape_of(y), out=y)


NON_NEGATIVE_ACTS = {"RELU", "RELU6"}
NON_NEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax"}


def _non_negative(ctx: LowerContext, name: str) -> bool:
    """True when the value is >= 0 by construction: zero padding is then exact for MaxPool, and
    PAD (unlike PADV2 with the lowest value) is supported by XNNPACK's int8 path."""
    producer = ctx.g.producers().get(name)
    if producer is None:
        return False
    return producer.op in NON_NEGATIVE_OPS or producer.attrs.get("_activation") in NON_NEGATIVE_ACTS


def _check_avg(node, graph):
    return _check_pool(node, graph)


def _valid_counts(size: int, k: int, s: int, pad_begin: int, out: int) -> np.ndarray:
    """How many real (non-pad) elements each output window covers along one axis."""
    starts = np.arange(out) * s - pad_begin
    return np.clip(starts + k, 0, size) - np.clip(starts, 0, size)


@lowers("MaxPool", since=1, check=_check_pool)
def max_pool(ctx, node):
    _pool(ctx, node, "MAX_POOL_2D")


@lowers("AveragePool", since=1, check=_check_avg)
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
