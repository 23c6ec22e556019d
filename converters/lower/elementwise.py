"""Binary elementwise ops: Add, Sub, Mul, Div, Pow, Max, Min (numpy broadcasting, fused activation),
and the variadic Sum as a chain of ADDs.

Division by a constant becomes MUL by its reciprocal: it is faster and, unlike DIV, has an int8
kernel. Pow with a constant exponent of 2 or 0.5 becomes MUL / SQRT for the same reasons.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers
from converters.tgraph import TTensor

BINARY = {"Add": ("ADD", "AddOptions"), "Sub": ("SUB", "SubOptions"), "Mul": ("MUL", "MulOptions"),
          "Div": ("DIV", "DivOptions"), "Max": ("MAXIMUM", None), "Min": ("MINIMUM", None),
          "Pow": ("POW", None)}
WITH_ACTIVATION = {"Add", "Sub", "Mul", "Div"}


def _check_binary(node, graph):
    if len([i for i in node.inputs if i]) != 2:
        return "only two inputs are supported"
    return None


def _binary(ctx: LowerContext, node, op: str, a: int, b: int) -> None:
    opcode, opts_name = BINARY[op]
    opts = None
    if opts_name:
        kwargs = {"fusedActivationFunction": ctx.activation(node)} if op in WITH_ACTIVATION else {}
        opts = options(opts_name, **kwargs)
    a, b = _int64_const(ctx, a, b), _int64_const(ctx, b, a)
    ctx.emit(opcode, [a, b], [ctx.output(node.outputs[0])], opts)


def _int64_const(ctx: LowerContext, const: int, other: int) -> int:
    """``const`` as int64 when the other operand is an int64 value: constants are narrowed to int32
    (context._narrowed), but an int64 graph input (silero VAD's ``sr`` times 0) stays int64, and
    TFLite's binary kernels take one type (tflite/kernels/mul.cc "input1->type != input2->type")."""
    t, o = ctx.t.tensors[const], ctx.t.tensors[other]
    if not t.is_const or t.dtype != "int32" or o.dtype != "int64":
        return const
    return ctx.t.add(TTensor(f"{t.name}/int64", t.shape, "int64", data=t.data.astype(np.int64)))


def _lower_binary(ctx: LowerContext, node) -> None:
    a_name, b_name = node.inputs[0], node.inputs[1]
    b_const = ctx.stored(b_name)
    if node.op == "Div" and b_const is not None and np.issubdtype(b_const.dtype, np.floating):
        recip = ctx.const((1.0 / b_const.astype(np.float64)).astype(np.float32), "reciprocal")
        _binary(ctx, node, "Mul", ctx.value(a_name), recip)
        return
    if node.op == "Pow" and b_const is not None and b_const.size == 1:
        e = float(b_const.reshape(-1)[0])
        x, y = ctx.value(a_name), ctx.output(node.outputs[0])
        if e == 2.0:
            ctx.emit("MUL", [x, x], [y], options("MulOptions"))
            return
        if e == 0.5:
            ctx.emit("SQRT", [x], [y])
            return
        if e == 1.0:
            ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")
            return
    _binary(ctx, node, node.op, ctx.value(a_name), ctx.value(b_name))


for _op in BINARY:
    lowers(_op, since=1, check=_check_binary)(_lower_binary)


@lowers("Sum", since=1)
def sum_(ctx: LowerContext, node) -> None:
    """Sum of n inputs as n - 1 ADDs, left to right (TFLite's ADD_N has no int8 kernel); one input
    is a copy. Intermediates are broadcast like ONNX's multidirectional Sum."""
    names = [i for i in node.inputs if i]
    y = ctx.output(node.outputs[0])
    cur = ctx.value(names[0])
    if len(names) == 1:
        ctx.reshape(cur, ctx.shape_of(y), out=y, hint="copy")
        return
    for k, name in enumerate(names[1:], start=2):
        b = ctx.value(name)
        if k == len(names):
            out = y
        else:
            shape = np.broadcast_shapes(ctx.shape_of(cur), ctx.shape_of(b))
            out = ctx.temp(shape, "partial_sum")
        ctx.emit("ADD", [cur, b], [out], options("AddOptions"))
        cur = out
