"""Conv (1-D, 2-D; groups, depthwise, strides, dilations, pads) and ConvTranspose.

ONNX weights are [O, I/g, kH, kW]; TFLite wants CONV_2D [O, kH, kW, I] and DEPTHWISE_CONV_2D
[1, kH, kW, C*m]. 1-D convolutions run as 2-D ones with a height of 1 (RESHAPE around). Grouped
convolutions that are not depthwise run as SPLIT -> one CONV_2D per group -> CONCATENATION, the
form every TFLite kernel (and XNNPACK) accepts. A stride-1 ConvTranspose (streaming decoders
write depthwise, dilated ones: GTCRN) is lowered as the Conv it equals; a strided grouped one as
one TRANSPOSE_CONV per group.
"""
from __future__ import annotations

import numpy as np

from converters.lower import padding
from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers


def _check_conv(node, graph):
    if graph.const(node.inputs[1]) is None:
        return "weights must be constant"
    if node.input(2) and graph.const(node.input(2)) is None:
        return "bias must be constant"
    if len(graph.tensors[node.inputs[0]].shape) not in (3, 4):
        return "only 1-D and 2-D convolutions are supported"
    return None


def _as_2d(node) -> tuple[list[int], list[int], list[int], list[int]]:
    k, s, d, p = (list(node.attrs[a]) for a in ("kernel_shape", "strides", "dilations", "pads"))
    if len(k) == 1:  # 1-D: height 1
        return [1, k[0]], [1, s[0]], [1, d[0]], [0, p[0], 0, p[1]]
    return k, s, d, p


@lowers("Conv", since=1, check=_check_conv)
def conv(ctx: LowerContext, node) -> None:
    w = ctx.g.const(node.inputs[1]).astype(np.float32)
    bias = (ctx.g.const(node.input(2)).astype(np.float32) if node.input(2)
            else np.zeros(w.shape[0], np.float32))
    k, s, d, pads = _as_2d(node)
    _convolve(ctx, node, w, bias, (s, d, pads), node.attrs.get("group", 1))


def _convolve(ctx: LowerContext, node, w, bias, geometry, group: int) -> None:
    """``node``'s input convolved with ONNX-layout weights ``w`` [O, I/g, (kH,) kW];
    ``geometry``: 2-D (strides, dilations, pads)."""
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    one_d = w.ndim == 3
    if one_d:
        w = w[:, :, None, :]
        x = ctx.as_2d(x)
        out_n, out_l, out_c = ctx.shape_of(y)
        y2d = ctx.temp([out_n, 1, out_l, out_c], "out_2d")
    else:
        y2d = y
    s, d, pads = geometry
    spatial = list(ctx.shape_of(x)[1:3])
    mode, explicit = padding.choose(spatial, list(w.shape[2:]), s, d, pads)
    if explicit:
        x = padding.emit_pad(ctx, x, explicit)
    cin = ctx.shape_of(x)[3]
    act = ctx.activation(node)
    if group == 1:
        _conv2d(ctx, x, y2d, w, bias, s, d, mode, act)
    elif group == cin and w.shape[1] == 1:
        _depthwise(ctx, x, y2d, w, bias, s, d, mode, act, w.shape[0] // cin)
    else:
        _grouped(ctx, x, y2d, w, bias, s, d, mode, act, group)
    if one_d:
        ctx.reshape(y2d, ctx.shape_of(y), out=y)


def _conv2d(ctx, x, y, w, bias, s, d, mode, act) -> None:
    opts = options("Conv2DOptions", padding=mode, strideH=s[0], strideW=s[1],
                   dilationHFactor=d[0], dilationWFactor=d[1], fusedActivationFunction=act)
    filt = ctx.const(w.transpose(0, 2, 3, 1), "filter")
    ctx.emit("CONV_2D", [x, filt, ctx.const(bias, "bias")], [y], opts)


def _depthwise(ctx, x, y, w, bias, s, d, mode, act, multiplier) -> None:
    opts = options("DepthwiseConv2DOptions", padding=mode, strideH=s[0], strideW=s[1],
                   dilationHFactor=d[0], dilationWFactor=d[1], depthMultiplier=multiplier,
                   fusedActivationFunction=act)
    filt = ctx.const(w[:, 0].transpose(1, 2, 0)[None], "filter")   # [1, kH, kW, C*m]
    ctx.emit("DEPTHWISE_CONV_2D", [x, filt, ctx.const(bias, "bias")], [y], opts)


def _grouped(ctx, x, y, w, bias, s, d, mode, act, group) -> None:
    n, h, wd, c = ctx.shape_of(x)
    parts = [ctx.temp([n, h, wd, c // group], f"group{i}") for i in range(group)]
    ctx.emit("SPLIT", [ctx.const(np.array(3, np.int32), "axis"), x], parts,
             options("SplitOptions", numSplits=group))
    per = w.shape[0] // group
    outs = []
    for i, part in enumerate(parts):
        out = ctx.temp(list(ctx.shape_of(y)[:3]) + [per], f"group{i}_out")
        _conv2d(ctx, part, out, w[i * per:(i + 1) * per], bias[i * per:(i + 1) * per], s, d, mode, act)
        outs.append(out)
    ctx.emit("CONCATENATION", outs, [y], options("ConcatenationOptions", axis=3))


def _check_conv_transpose(node, graph):
    problem = _check_conv(node, graph)
    if problem:
        return problem
    if any(v != 1 for v in node.attrs["dilations"]) and _as_conv(node, graph.const(node.inputs[1])) is None:
        return "dilated ConvTranspose with a stride is not supported (TRANSPOSE_CONV has no dilation)"
    return None


def _as_conv(node, w: np.ndarray):
    """(weights, 2-D pads) of the Conv that equals a stride-1 ConvTranspose, or None.

    With stride 1 a transposed convolution is a convolution with each group's kernel flipped
    and its in/out axes swapped, padded by ``d*(k-1) - p`` per side
    (https://onnx.ai/onnx/operators/onnx__ConvTranspose.html). Conv then covers what
    TRANSPOSE_CONV cannot: groups (depthwise), dilations; and no crop is needed."""
    k, s, d, pads = _as_2d(node)
    if any(v != 1 for v in s) or any(node.attrs.get("output_padding") or []):
        return None
    n = len(k)
    conv_pads = [d[i % n] * (k[i % n] - 1) - pads[i] for i in range(2 * n)]
    if any(p < 0 for p in conv_pads):
        return None
    group = node.attrs.get("group", 1)
    cin, per = w.shape[:2]
    wg = w.reshape(group, cin // group, per, *w.shape[2:]).swapaxes(1, 2)      # [g, O/g, I/g, k...]
    flipped = np.flip(wg, axis=tuple(range(3, wg.ndim)))
    return np.ascontiguousarray(flipped.reshape(group * per, cin // group, *w.shape[2:])), conv_pads


@lowers("ConvTranspose", since=1, check=_check_conv_transpose)
def conv_transpose(ctx: LowerContext, node) -> None:
    """Stride 1: the equal Conv (``_as_conv``). Else TRANSPOSE_CONV with VALID padding, which gives
    the full output, ONNX pads cropped after; groups run as SPLIT -> one per group -> CONCATENATION."""
    w = ctx.g.const(node.inputs[1]).astype(np.float32)       # [I, O/g, kH(, kW)]
    bias = ctx.g.const(node.input(2)).astype(np.float32) if node.input(2) else None
    group = node.attrs.get("group", 1)
    as_conv = _as_conv(node, w)
    if as_conv is not None:
        _, s, d, _ = _as_2d(node)
        conv_w, pads = as_conv
        full_bias = bias if bias is not None else np.zeros(conv_w.shape[0], np.float32)
        _convolve(ctx, node, conv_w, full_bias, (s, d, pads), group)
        return
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    one_d = w.ndim == 3
    if one_d:
        w = w[:, :, None, :]
        x = ctx.as_2d(x)
    n, h, wd, cin = ctx.shape_of(x)
    k, s, _, pads = _as_2d(node)
    outpad = list(node.attrs.get("output_padding") or [0, 0])
    outpad = [0, outpad[0]] if one_d else outpad
    full = [(h - 1) * s[0] + k[0], (wd - 1) * s[1] + k[1]]
    out_hw = [full[i] + outpad[i] - pads[i] - pads[2 + i] for i in range(2)]
    target = ctx.temp([n, *out_hw, w.shape[1] * group], "out_2d") if one_d else y
    geometry = (k, s, pads, outpad, full, out_hw)
    if group == 1:
        _transpose_conv(ctx, x, target, w, bias, geometry)
    else:
        parts = [ctx.temp([n, h, wd, cin // group], f"group{i}") for i in range(group)]
        ctx.emit("SPLIT", [ctx.const(np.array(3, np.int32), "axis"), x], parts,
                 options("SplitOptions", numSplits=group))
        per, outs = w.shape[1], []
        for i, part in enumerate(parts):
            outs.append(ctx.temp([n, *out_hw, per], f"group{i}_out"))
            _transpose_conv(ctx, part, outs[-1], w[i * (cin // group):(i + 1) * (cin // group)],
                            None if bias is None else bias[i * per:(i + 1) * per], geometry)
        ctx.emit("CONCATENATION", outs, [target], options("ConcatenationOptions", axis=3))
    if one_d:
        ctx.reshape(target, ctx.shape_of(y), out=y)


def _transpose_conv(ctx, x, target, w, bias, geometry) -> None:
    """One TRANSPOSE_CONV of NHWC ``x`` into ``target`` with weights ``w`` [I, O, kH, kW]."""
    k, s, pads, outpad, full, out_hw = geometry
    n, c_out = ctx.shape_of(x)[0], w.shape[1]
    # Output padding that reaches past the full output is zero-extended, and ONNX adds the bias
    # there too: then the bias is added after the crop instead of inside TRANSPOSE_CONV.
    extra = [max(0, pads[i] + out_hw[i] - full[i]) for i in range(2)]
    late_bias = bias is not None and any(extra)
    exact = not any(pads) and not any(extra)
    full_t = target if exact else ctx.temp([n, *full, c_out], "full")
    inputs = [ctx.const(np.array([n, *full, c_out], np.int32), "output_shape"),
              ctx.const(w.transpose(1, 2, 3, 0), "filter"), x,
              ctx.const(bias, "bias") if bias is not None and not late_bias else -1]
    ctx.emit("TRANSPOSE_CONV", inputs, [full_t],
             options("TransposeConvOptions", padding=padding.schema.Padding.VALID,
                     strideH=s[0], strideW=s[1]))
    if not exact:
        _crop(ctx, full_t, pads, extra, out_hw, bias if late_bias else None, target)


def _crop(ctx, cur, pads, extra, out_hw, bias, target):
    """Take [pad_begin, pad_begin + out) of the full output; zero-extend for output_padding."""
    n, _, _, c = ctx.shape_of(cur)
    if any(extra):
        cur = padding.emit_pad(ctx, cur, [0, 0, extra[0], extra[1]], hint="output_padding")
    begin = np.array([0, pads[0], pads[1], 0], np.int32)
    size = np.array([n, out_hw[0], out_hw[1], c], np.int32)
    out = target if bias is None else ctx.temp(size, "cropped")
    ctx.emit("SLICE", [cur, ctx.const(begin, "begin"), ctx.const(size, "size")], [out],
             options("SliceOptions"))
    if bias is not None:
        ctx.emit("ADD", [out, ctx.const(bias, "bias")], [target], options("AddOptions"))
