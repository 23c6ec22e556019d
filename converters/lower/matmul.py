"""Gemm and MatMul: FULLY_CONNECTED when the weight is a constant matrix, else BATCH_MATMUL.

FULLY_CONNECTED wants weights [N, K] and computes ``x @ W.T + b``; with ``keepNumDims`` it keeps
the leading dims of a rank > 2 input, which is exactly MatMul's broadcasting of a 2-D weight.
Gemm's alpha is folded into the weights and beta into the bias, so no extra op runs.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, laid_out, options
from converters.lower.registry import lowers


def _check_gemm(node, graph):
    c = node.input(2)
    if c and graph.const(c) is None:
        return "Gemm bias C must be constant"
    return None


@lowers("Gemm", since=1, check=_check_gemm)
def gemm(ctx: LowerContext, node) -> None:
    a, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    if node.attrs.get("transA", 0):
        a = _transpose2d(ctx, a)
    b = ctx.g.const(node.inputs[1])
    n = ctx.shape_of(y)[1]
    c = ctx.g.const(node.input(2)) if node.input(2) else None
    bias_vec = None
    if c is not None and c.size in (1, n) and (c.ndim < 2 or c.shape[0] == 1):
        bias_vec, c = np.broadcast_to(c.reshape(-1) * beta, (n,)).astype(np.float32), None
    act = ctx.activation(node)
    if b is not None:
        w = b if node.attrs.get("transB", 0) else b.T
        w = w * alpha if alpha != 1.0 else w       # no copy of a 100M-element weight for nothing
        target = y if c is None else ctx.temp(ctx.shape_of(y), "matmul")
        key = (node.inputs[1], bool(node.attrs.get("transB", 0)), alpha)
        _fully_connected(ctx, a, _weights(ctx, w, key), bias_vec, target, act if c is None else 0, keep=False)
    else:
        bt = ctx.value(node.inputs[1])
        target = ctx.temp(ctx.shape_of(y), "matmul")
        ctx.emit("BATCH_MATMUL", [a, bt], [target],
                 options("BatchMatMulOptions", adjX=False, adjY=bool(node.attrs.get("transB", 0))))
        scaled = _scale(ctx, target, alpha)
        c_full = c if c is not None else bias_vec
        _add_const(ctx, scaled, c_full if c_full is not None else None, y, act, beta=1.0)
        return
    if c is not None:
        _add_const(ctx, target, c * beta, y, act)


def _weights(ctx, w: np.ndarray, key: tuple) -> int:
    """One constant per (initializer, transB, alpha): a hand-unrolled LSTM's Gemms all read the same
    W (captcha-whisperer: 40 Gemms, one 400x4096 W per direction) and a copy per Gemm made the
    int8 model 68 MB instead of 10 (quantize._clone_shared_constants keeps a shared weight one)."""
    if key not in ctx.shared:
        ctx.shared[key] = ctx.const(laid_out(w, np.float32), "weights")
    return ctx.shared[key]


def _fully_connected(ctx, a, w: int, bias, out, act, keep):
    """FULLY_CONNECTED of ``a`` by the weight tensor ``w`` ([N, K], from ``_weights``)."""
    n = ctx.shape_of(w)[0]
    inputs = [a, w]
    inputs.append(ctx.const(bias, "bias") if bias is not None
                  else ctx.const(np.zeros(n, np.float32), "bias"))
    ctx.emit("FULLY_CONNECTED", inputs, [out],
             options("FullyConnectedOptions", fusedActivationFunction=act, keepNumDims=keep))


def _transpose2d(ctx, a):
    m, k = ctx.shape_of(a)
    out = ctx.temp([k, m], "a_t")
    ctx.emit("TRANSPOSE", [a, ctx.const(np.array([1, 0], np.int32), "perm")], [out],
             options("TransposeOptions"))
    return out


def _scale(ctx, x, alpha):
    if alpha == 1.0:
        return x
    out = ctx.temp(ctx.shape_of(x), "alpha")
    ctx.emit("MUL", [x, ctx.const(np.array(alpha, np.float32), "alpha")], [out], options("MulOptions"))
    return out


def _add_const(ctx, x, c, y, act, beta=1.0):
    if c is None:
        ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")
        return
    ctx.emit("ADD", [x, ctx.const(np.asarray(c * beta, np.float32), "c")], [y],
             options("AddOptions", fusedActivationFunction=act))


@lowers("MatMul", since=1)
def matmul(ctx: LowerContext, node) -> None:
    a, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    b = ctx.g.const(node.inputs[1])
    a_shape, b_shape = ctx.onnx_shape(node.inputs[0]), ctx.onnx_shape(node.inputs[1])
    if b is not None and b.ndim == 2 and len(a_shape) >= 2:
        _fully_connected(ctx, a, _weights(ctx, b.T, (node.inputs[1], False, 1.0)), None, y,
                         ctx.activation(node), keep=len(a_shape) > 2)
        return
    bt = ctx.value(node.inputs[1])
    # numpy semantics for 1-D operands: a vector is [1, K] on the left and [K, 1] on the right,
    # and that dim is dropped from the result. BATCH_MATMUL needs rank >= 2, so reshape around it.
    if len(a_shape) == 1:
        a = ctx.reshape(a, [1, a_shape[0]], hint="a_2d")
    if len(b_shape) == 1:
        bt = ctx.reshape(bt, [b_shape[0], 1], hint="b_2d")
    if len(a_shape) > 1 and len(b_shape) > 1:
        target = y
    else:
        lead = list(np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])))
        rows = [1] if len(a_shape) == 1 else [a_shape[-2]]
        cols = [1] if len(b_shape) == 1 else [b_shape[-1]]
        target = ctx.temp(lead + rows + cols, "matmul")
    ctx.emit("BATCH_MATMUL", [a, bt], [target], options("BatchMatMulOptions", adjX=False, adjY=False))
    if target != y:
        ctx.reshape(target, ctx.shape_of(y), out=y)
