"""Pooling and reductions: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Reduce*
(ReduceSumSquare / ReduceL2 / ReduceL1 as an elementwise op, SUM, [SQRT]: TFLite has no norms).

Pools run channels-last (1-D pools as 2-D with height 1). ``ceil_mode`` extends the end padding.
ONNX pads that are zero or equal TFLite's SAME map onto VALID / SAME. Other pads:

* AveragePool, ``count_include_pad=1``: a zero PAD of the ONNX pads (zero is exact in int8, it is
  the zero point), then a VALID pool -- always, as SAME would leave the pads out of the count;
* AveragePool, ``count_include_pad=0``, and MaxPool over signed values: ``_split_pool`` -- border
  blocks pooled from input slices, so no pad value ever enters a window;
* MaxPool over values >= 0 (after Relu/ReLU6/Sigmoid/Softmax): a zero PAD, then a VALID pool.
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
    final = y if not one_d else ctx.temp([ctx.shape_of(y)[0], 1, *ctx.shape_of(y)[1:]], "out_2d")
    average = opcode == "AVERAGE_POOL_2D"
    if average and node.attrs.get("count_include_pad", 0) and any(p):
        # the ONNX pads are averaged as zeros: pad them for real (exact in int8, zero is the zero
        # point); only a ceil_mode extension past them is left, and it must not be counted
        if any(onnx_pads):
            x = padding.emit_pad(ctx, x, onnx_pads)
        p, spatial = [0, 0, p[2] - onnx_pads[2], p[3] - onnx_pads[3]], list(ctx.shape_of(x)[1:3])
    mode, explicit = padding.choose(spatial, k, s, [1, 1], p)
    if explicit is not None and (average or not _non_negative(ctx, node.inputs[0])):
        _split_pool(ctx, x, final, k, s, p, opcode, ctx.activation(node))
    else:
        if explicit is not None:   # a MaxPool over values >= 0: zeros are as neutral as -inf
            x = padding.emit_pad(ctx, x, explicit)
        _emit_pool(ctx, opcode, x, final, k, s, mode, ctx.activation(node))
    if one_d:
        ctx.reshape(final, ctx.shape_of(y), out=y)


def _emit_pool(ctx, opcode, x, out, k, s, mode, activation):
    ctx.emit(opcode, [x], [out],
             options("Pool2DOptions", padding=mode, strideH=s[0], strideW=s[1], filterHeight=k[0],
                     filterWidth=k[1], fusedActivationFunction=activation))


def window_groups(n_out: int, n_in: int, k: int, s: int, pad: int) -> list[tuple[int, int, int]]:
    """Output positions along one axis grouped into runs a single VALID pool can compute.

    Output i pools input [i*s - pad, i*s - pad + k) clipped to [0, n_in). Consecutive outputs
    whose clipped windows have the same length and start ``s`` apart form one run. Returns
    (first input index, window length, outputs) per run: the interior is one run, each border
    output whose window overhangs the padding is its own (at most pad/s + 1 per side).
    """
    runs: list[list[int]] = []
    for i in range(n_out):
        lo, hi = max(i * s - pad, 0), min(i * s - pad + k, n_in)
        if runs and hi - lo == runs[-1][1] and lo == runs[-1][0] + s * runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([lo, max(hi - lo, 1), 1])   # ONNX pads < kernel: never an empty window
    return [tuple(r) for r in runs]


def _split_pool(ctx, x, out, k, s, p, opcode, activation) -> None:
    """A pool whose padding is excluded from every window, with VALID pools only.

    TFLite pools have SAME or VALID padding; an explicit PAD would put its zeros *into* the
    average (or, as PADV2 with the lowest value, into a MaxPool, which XNNPACK's int8 path does
    not always accept). Instead each block of outputs whose clipped windows share one size is
    pooled from a SLICE of the input with that size as kernel, and the blocks are concatenated.
    Every output is then the plain average (max) of exactly its in-bounds elements, computed by
    one int8 pool with its usual half-step rounding -- no PAD, no per-window rescale (a MUL by
    k*k/count multiplied that rounding error by up to k*k at the corners). All ops (SLICE,
    AVERAGE/MAX_POOL_2D, CONCATENATION) share the input's int8 params and run in XNNPACK; the
    price is (rows runs) x (column runs) small pools, 9 for the usual one-pixel border.
    """
    n, h, w, c = ctx.shape_of(x)
    oh, ow = ctx.shape_of(out)[1:3]
    rows, cols = window_groups(oh, h, k[0], s[0], p[0]), window_groups(ow, w, k[1], s[1], p[1])
    strips = []
    for r0, rk, rn in rows:
        pieces = []
        for c0, ck, cn in cols:
            size = [n, (rn - 1) * s[0] + rk, (cn - 1) * s[1] + ck, c]
            src = x
            if (r0, c0, size[1], size[2]) != (0, 0, h, w):
                src = ctx.emit_new("SLICE", [x, ctx.const(np.array([0, r0, c0, 0], np.int32), "begin"),
                                             ctx.const(np.array(size, np.int32), "size")],
                                   size, hint="window_slice")
            piece = out if len(rows) == len(cols) == 1 else ctx.temp([n, rn, cn, c], "window_pool")
            _emit_pool(ctx, opcode, src, piece, [rk, ck], s, padding.schema.Padding.VALID,
                       activation)
            pieces.append(piece)
        strips.append(_concat(ctx, pieces, 2, out if len(rows) == 1 else None))
    if len(rows) > 1:
        _concat(ctx, strips, 1, out)


def _concat(ctx, parts: list[int], axis: int, out: int | None) -> int:
    if len(parts) == 1:
        return parts[0]
    shape = list(ctx.shape_of(parts[0]))
    shape[axis] = sum(ctx.shape_of(t)[axis] for t in parts)
    out = ctx.temp(shape, "window_concat") if out is None else out
    ctx.emit("CONCATENATION", parts, [out], options("ConcatenationOptions", axis=axis))
    return out


NON_NEGATIVE_ACTS = {"RELU", "RELU6"}
NON_NEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax"}


def _non_negative(ctx: LowerContext, name: str) -> bool:
    """True when the value is >= 0 by construction: a MaxPool can then take one zero PAD (exact,
    and what such models always got) instead of the slice-and-concatenate split."""
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


# ReduceX(x) = post(SUM(pre(x))): F.normalize exports ReduceL2 (https://onnx.ai/onnx/operators/onnx__ReduceL2.html)
NORMS = {"ReduceSumSquare": ("square", None), "ReduceL2": ("square", "SQRT"), "ReduceL1": ("ABS", None)}


@lowers("ReduceSumSquare", since=1)
@lowers("ReduceL2", since=1)
@lowers("ReduceL1", since=1)
def norm_reducer(ctx: LowerContext, node) -> None:
    name = node.inputs[0]
    x, y = ctx.value(name), ctx.output(node.outputs[0])
    pre, post = NORMS[node.op]
    shape = ctx.shape_of(x)
    if pre == "square":
        terms = ctx.emit_new("MUL", [x, x], shape, options("MulOptions"), "square")
    else:
        terms = ctx.emit_new(pre, [x], shape, None, "abs")
    axes = sorted(ctx.axis(name, a) for a in node.attrs["axes"])
    total = y if post is None else ctx.temp(ctx.shape_of(y), "sum")
    ctx.emit("SUM", [terms, ctx.const(np.array(axes, np.int32), "axes")], [total],
             options("ReducerOptions", keepDims=bool(node.attrs.get("keepdims", 1))))
    if post is not None:
        ctx.emit(post, [total], [y])
