"""LayerNormalization, InstanceNormalization and ganglion::Normalize (a normalization found written
out op by op, ``passes/fuse_normalization``) as MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL
(/ MUL scale / ADD bias).

TFLite has no layer-norm builtin; every op of this decomposition has float and int8 kernels (the
int8 graph needs measured ranges for its temporaries, see tflite/ranges.py). (BatchNormalization never reaches lowering: the
fuse_conv_bn pass folds it or rewrites it as Mul + Add.)
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers


def _check_layer_norm(node, graph):
    if graph.const(node.inputs[1]) is None or (node.input(2) and graph.const(node.input(2)) is None):
        return "LayerNormalization scale and bias must be constant"
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        return "LayerNormalization mean/inv_std outputs are not supported"
    return None


@lowers("LayerNormalization", since=17, check=_check_layer_norm)
def layer_norm(ctx: LowerContext, node) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    rank = len(ctx.shape_of(x))
    centered, inv = _statistics(ctx, node, x, list(range(node.attrs["axis"], rank)))
    scale = ctx.g.const(node.inputs[1]).astype(np.float32)
    bias = ctx.g.const(node.input(2)).astype(np.float32) if node.input(2) else None
    _affine(ctx, x, y, centered, inv, scale, bias)


def _check_instance_norm(node, graph):
    if graph.const(node.inputs[1]) is None or graph.const(node.inputs[2]) is None:
        return "InstanceNormalization scale and bias must be constant"
    if len(graph.tensors[node.inputs[0]].shape) not in (3, 4):
        return "only 1-D and 2-D InstanceNormalization is supported"
    return None


@lowers("InstanceNormalization", since=1, check=_check_instance_norm)
def instance_norm(ctx: LowerContext, node) -> None:
    """Per-sample, per-channel statistics over the spatial axes (channels-last: 1 .. rank-2)."""
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    rank = len(ctx.shape_of(x))
    centered, inv = _statistics(ctx, node, x, list(range(1, rank - 1)))
    scale = ctx.g.const(node.inputs[1]).astype(np.float32)
    bias = ctx.g.const(node.inputs[2]).astype(np.float32)
    _affine(ctx, x, y, centered, inv, scale, bias)


def _affine(ctx: LowerContext, x: int, y: int, centered: int, inv: int, scale, bias) -> None:
    """y = centered * inv * scale + bias, skipping a unit scale and a zero bias."""
    if bias is not None and not np.any(bias):
        bias = None                       # a zero bias (a fresh init) would cost an ADD
    unit = bool(np.all(scale == 1.0))     # a unit scale would cost a MUL
    steps = [("MUL", inv, "normalized")]
    if not unit:
        steps.append(("MUL", ctx.const(scale, "scale"), "scaled"))
    if bias is not None:
        steps.append(("ADD", ctx.const(bias, "bias"), "biased"))
    cur = centered
    for k, (opcode, operand, hint) in enumerate(steps):
        out = y if k == len(steps) - 1 else ctx.temp(ctx.shape_of(x), hint)
        ctx.emit(opcode, [cur, operand], [out], options("MulOptions" if opcode == "MUL" else "AddOptions"))
        cur = out


def _check_normalize(node, graph):
    if graph.tensors[node.inputs[0]].dtype != np.float32:
        return "Normalize needs a float32 input"
    return None


@lowers("Normalize", since=1, check=_check_normalize, domain="ganglion")
def normalize(ctx: LowerContext, node) -> None:
    """(x [- mean]) / sqrt(mean of its square + eps) over ``axes``: a LayerNorm / InstanceNorm /
    GroupNorm (``center``) or an RMSNorm that ``passes/fuse_normalization`` found written out;
    with ``l2``, x / max(||x||_2, eps) = x * rsqrt(max(sum of x^2, eps^2)) (F.normalize)."""
    name = node.inputs[0]
    x, y = ctx.value(name), ctx.output(node.outputs[0])
    stored = sorted(ctx.axis(name, a) for a in node.attrs["axes"])
    centered, inv = _statistics(ctx, node, x, stored, center=bool(node.attrs["center"]),
                                l2=bool(node.attrs.get("l2", 0)))
    ctx.emit("MUL", [centered, inv], [y], options("MulOptions"))


def _statistics(ctx: LowerContext, node, x: int, stored_axes: list[int],
                center: bool = True, l2: bool = False) -> tuple[int, int]:
    """(x - mean, 1 / sqrt(var + eps)) over ``stored_axes``, both as TFLite tensors; without
    ``center`` (RMSNorm) x itself and 1 / sqrt(mean(x^2) + eps); with ``l2`` x itself and
    1 / sqrt(max(sum(x^2), eps^2))."""
    shape = ctx.shape_of(x)
    axes = ctx.const(np.array(stored_axes, np.int32), "axes")
    kept = [1 if i in stored_axes else s for i, s in enumerate(shape)]
    op = ctx.emit_new
    centered = x
    if center:
        mean = op("MEAN", [x, axes], kept, options("ReducerOptions", keepDims=True), "mean")
        centered = op("SUB", [x, mean], shape, options("SubOptions"), "centered")
    square = op("MUL", [centered, centered], shape, options("MulOptions"), "square")
    eps = node.attrs.get("epsilon", 1e-5)
    if l2:
        total = op("SUM", [square, axes], kept, options("ReducerOptions", keepDims=True), "sum_sq")
        floor = ctx.const(np.array(eps * eps, np.float32), "epsilon_sq")
        var_eps = op("MAXIMUM", [total, floor], kept, None, "sum_sq_floor")
        return centered, op("RSQRT", [var_eps], kept, None, "inv_norm")
    var = op("MEAN", [square, axes], kept, options("ReducerOptions", keepDims=True), "var")
    eps = ctx.const(np.array(eps, np.float32), "epsilon")
    var_eps = op("ADD", [var, eps], kept, options("AddOptions"), "var_eps")
    return centered, op("RSQRT", [var_eps], kept, None, "inv_std")


def _check_lrn(node, graph):
    if len(graph.tensors[node.inputs[0]].shape) != 4:
        return "only 4-D (N, C, H, W) LRN is supported"
    if node.attrs["size"] % 2 == 0:
        # ONNX's window for an even size is lopsided (floor below, ceil above); TFLite's is symmetric
        return f"LRN with an even size ({node.attrs['size']}) is not supported"
    return None


@lowers("LRN", since=1, check=_check_lrn)
def lrn(ctx: LowerContext, node) -> None:
    """LOCAL_RESPONSE_NORMALIZATION over the (channels-last) last axis.

    ONNX: y = x / (bias + alpha / size * sum of x^2 over ``size`` channels) ^ beta
    (https://onnx.ai/onnx/operators/onnx__LRN.html); TFLite sums over ``radius`` channels each side
    and multiplies by ``alpha`` unscaled, hence radius = (size - 1) / 2 and alpha / size. Float
    only: LiteRT has no int8 kernel, so the int8 build keeps it a float island (not in INT8_OPS).
    """
    a = node.attrs
    size = int(a["size"])
    opts = options("LocalResponseNormalizationOptions", radius=(size - 1) // 2,
                   bias=float(a.get("bias", 1.0)), alpha=float(a.get("alpha", 1e-4)) / size,
                   beta=float(a.get("beta", 0.75)))
    ctx.emit("LOCAL_RESPONSE_NORMALIZATION", [ctx.value(node.inputs[0])],
             [ctx.output(node.outputs[0])], opts)
