"""LayerNormalization as MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL / MUL / ADD.

TFLite has no layer-norm builtin; this decomposition is what TensorFlow's own converter emits and
every op in it has float and int8 kernels. (BatchNormalization never reaches lowering: the
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
    name = node.inputs[0]
    x, y = ctx.value(name), ctx.output(node.outputs[0])
    shape = ctx.shape_of(x)
    rank = len(shape)
    axes = ctx.const(np.arange(node.attrs["axis"], rank, dtype=np.int32), "axes")
    kept = [1 if i >= node.attrs["axis"] else s for i, s in enumerate(shape)]

    def op(opcode, inputs, out_shape, opts, hint):
        out = ctx.temp(out_shape, hint)
        ctx.emit(opcode, inputs, [out], opts)
        return out

    mean = op("MEAN", [x, axes], kept, options("ReducerOptions", keepDims=True), "mean")
    centered = op("SUB", [x, mean], shape, options("SubOptions"), "centered")
    square = op("MUL", [centered, centered], shape, options("MulOptions"), "square")
    var = op("MEAN", [square, axes], kept, options("ReducerOptions", keepDims=True), "var")
    eps = ctx.const(np.array(node.attrs.get("epsilon", 1e-5), np.float32), "epsilon")
    inv = op("RSQRT", [op("ADD", [var, eps], kept, options("AddOptions"), "var_eps")], kept, None,
             "inv_std")
    normed = op("MUL", [centered, inv], shape, options("MulOptions"), "normalized")
    scale = ctx.g.const(node.inputs[1]).astype(np.float32)
    bias = ctx.g.const(node.input(2)).astype(np.float32) if node.input(2) else None
    scaled_out = y if bias is None else ctx.temp(shape, "scaled")
    ctx.emit("MUL", [normed, ctx.const(scale, "scale")], [scaled_out], options("MulOptions"))
    if bias is not None:
        ctx.emit("ADD", [scaled_out, ctx.const(bias, "bias")], [y], options("AddOptions"))
