"""Activations: Relu, Clip, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Gelu, Erf,
Softmax/LogSoftmax, Reciprocal and the simple unary math ops.

Clip maps onto RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 when its bounds allow (each has an int8
kernel), otherwise MAXIMUM + MINIMUM. HardSigmoid is ``relu6(6a*x + 6b) / 6`` (three int8-capable
ops); HardSwish is HARD_SWISH in float and ``x * relu6(x + 3) / 6`` in int8 (``hard_swish``).
Erf has no TFLite builtin: it is evaluated with Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) in
float; the ``fuse_gelu`` pass turns the usual erf-GELU pattern into one GELU first.
"""
from __future__ import annotations

import math

import numpy as np

from converters.lower.context import ACTIVATIONS, LowerContext, options
from converters.lower.registry import lowers

UNARY = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH",
         "Sqrt": "SQRT", "Exp": "EXP", "Log": "LOG", "Abs": "ABS", "Neg": "NEG", "Floor": "FLOOR",
         "Ceil": "CEIL", "Elu": "ELU"}
UNARY_PLAIN = [op for op in UNARY if op not in ("Elu", "HardSwish")]
CLIP = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, math.inf): "RELU",
        (0.0, 1.0): "RELU_0_TO_1"}


def _unary(ctx: LowerContext, node) -> None:
    ctx.emit(UNARY[node.op], [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])])


for _op in UNARY_PLAIN:
    lowers(_op, since=1)(_unary)


def _check_elu(node, graph):
    return None if node.attrs.get("alpha", 1.0) == 1.0 else "Elu alpha != 1 is not supported"


lowers("Elu", since=1, check=_check_elu)(_unary)


@lowers("Clip", since=11)
def clip(ctx: LowerContext, node) -> None:
    lo, hi = float(node.attrs["min"]), float(node.attrs["max"])
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    named = CLIP.get((lo, hi))
    if named:
        ctx.emit(named, [x], [y])
        return
    if math.isfinite(lo) and math.isfinite(hi):
        mid = ctx.temp(ctx.shape_of(x), "max")
        ctx.emit("MAXIMUM", [x, ctx.const(np.array(lo, np.float32), "min")], [mid])
        ctx.emit("MINIMUM", [mid, ctx.const(np.array(hi, np.float32), "max")], [y])
    elif math.isfinite(lo):
        ctx.emit("MAXIMUM", [x, ctx.const(np.array(lo, np.float32), "min")], [y])
    elif math.isfinite(hi):
        ctx.emit("MINIMUM", [x, ctx.const(np.array(hi, np.float32), "max")], [y])
    else:
        ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")


@lowers("LeakyRelu", since=1)
def leaky_relu(ctx: LowerContext, node) -> None:
    ctx.emit("LEAKY_RELU", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])],
             options("LeakyReluOptions", alpha=float(node.attrs.get("alpha", 0.01))))


def _check_prelu(node, graph):
    return None if graph.const(node.inputs[1]) is not None else "PRelu slope must be constant"


@lowers("PRelu", since=1, check=_check_prelu)
def prelu(ctx: LowerContext, node) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    slope = ctx.stored(node.inputs[1]).astype(np.float32)
    rank = len(ctx.shape_of(x))
    full = (1,) * (rank - slope.ndim) + slope.shape
    if full[0] == 1:
        slope = slope.reshape(full[1:])   # alpha as [H, W, C]: the form XNNPACK accepts
    ctx.emit("PRELU", [x, ctx.const(slope, "alpha")], [y])


@lowers("HardSwish", since=14)
def hard_swish(ctx: LowerContext, node) -> None:
    """HARD_SWISH in float; in int8 ``x * relu6(x + 3) / 6`` as ADD+RELU6, MUL, MUL: XNNPACK (LiteRT
    2.3) has no int8 HARD_SWISH, and the reference kernel between delegate partitions made int8
    MobileNetV3-Small 3.6x slower (49.8 vs 13.9 ms, same holdout SQNR: 15.56 / 15.60 dB).
    ``tflite/saturate.py`` still cuts x at -3, as for the op."""
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    if ctx.g.quantize != "int8":
        ctx.emit("HARD_SWISH", [x], [y])
        return
    shape = ctx.shape_of(x)
    gate, prod = ctx.temp(shape, "gate"), ctx.temp(shape, "product")
    ctx.emit("ADD", [x, ctx.const(np.array(3, np.float32), "three")], [gate],
             options("AddOptions", fusedActivationFunction=ACTIVATIONS["RELU6"]))
    ctx.emit("MUL", [x, gate], [prod], options("MulOptions"))
    ctx.emit("MUL", [prod, ctx.const(np.array(1 / 6, np.float32), "sixth")], [y], options("MulOptions"))


@lowers("HardSigmoid", since=1)
def hard_sigmoid(ctx: LowerContext, node) -> None:
    a, b = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    shape = ctx.shape_of(x)
    scaled, shifted = ctx.temp(shape, "scaled"), ctx.temp(shape, "relu6")
    ctx.emit("MUL", [x, ctx.const(np.array(6 * a, np.float32), "six_alpha")], [scaled],
             options("MulOptions"))
    ctx.emit("ADD", [scaled, ctx.const(np.array(6 * b, np.float32), "six_beta")], [shifted],
             options("AddOptions", fusedActivationFunction=ACTIVATIONS["RELU6"]))
    ctx.emit("MUL", [shifted, ctx.const(np.array(1 / 6, np.float32), "sixth")], [y],
             options("MulOptions"))


@lowers("Gelu", since=1)
def gelu(ctx: LowerContext, node) -> None:
    ctx.emit("GELU", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])],
             options("GeluOptions", approximate=node.attrs.get("approximate", "none") == "tanh"))


@lowers("Softmax", since=1)
def softmax(ctx: LowerContext, node) -> None:
    # convert_layout guarantees the softmax axis is stored innermost.
    ctx.emit("SOFTMAX", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])],
             options("SoftmaxOptions", beta=1.0))


@lowers("LogSoftmax", since=1)
def log_softmax(ctx: LowerContext, node) -> None:
    ctx.emit("LOG_SOFTMAX", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])],
             options("LogSoftmaxOptions"))


# Abramowitz & Stegun 7.1.26 coefficients.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@lowers("Reciprocal", since=1)
def reciprocal(ctx: LowerContext, node) -> None:
    """1 / x as DIV (no RECIPROCAL builtin; in int8 a float island, as DIV has no int8 kernel)."""
    ctx.emit("DIV", [ctx.const(np.array(1.0, np.float32), "one"), ctx.value(node.inputs[0])],
             [ctx.output(node.outputs[0])], options("DivOptions"))


@lowers("Erf", since=9)
def erf(ctx: LowerContext, node) -> None:
    """erf(x) = sign(x) * (1 - poly(t) * exp(-x^2)), t = 1 / (1 + p|x|)."""
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    shape = ctx.shape_of(x)

    def op(opcode, inputs, opts=None, hint="t"):
        return ctx.emit_new(opcode, inputs, shape, opts, hint)

    def c(v, hint):
        return ctx.const(np.array(v, np.float32), hint)

    ax = op("ABS", [x], hint="abs")
    denom = op("ADD", [op("MUL", [ax, c(_AS_P, "p")], options("MulOptions")), c(1.0, "one")],
               options("AddOptions"), "denom")
    t = op("DIV", [c(1.0, "one"), denom], options("DivOptions"), "t")
    poly = op("MUL", [t, c(_AS_A[4], "a5")], options("MulOptions"))
    for k in (3, 2, 1, 0):
        poly = op("MUL", [op("ADD", [poly, c(_AS_A[k], f"a{k + 1}")], options("AddOptions")), t],
                  options("MulOptions"))
    e = op("EXP", [op("NEG", [op("MUL", [x, x], options("MulOptions"))])], hint="exp")
    one_minus = op("SUB", [c(1.0, "one"), op("MUL", [poly, e], options("MulOptions"))],
                   options("SubOptions"))
    ctx.emit("MUL", [op("SIGN", [x], hint="sign"), one_minus], [y], options("MulOptions"))
