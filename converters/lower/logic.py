"""Comparisons, boolean logic and selection: Equal, Less(OrEqual), Greater(OrEqual), Not, And, Or,
Xor and Where.

Exporters emit these around masks: ``masked_fill`` (torch: ``Where(Not(mask), -inf, x)``), padded
token ids (tf2onnx's ``ids < 0 ? ids + V : ids`` before an embedding Gather), attention masks built
from a bool input. TFLite has one builtin for each; none of them is in ``rules.INT8_OPS``, so in an
int8 graph their float operands are dequantized first (a float island) while bool and integer
tensors pass untouched. Both operands of a TFLite comparison or SELECT_V2 must have one type
(tensorflow/lite/kernels/comparisons.cc, select.cc), so an int32-narrowed constant next to an int64
value is widened like the binary arithmetic ops do (``elementwise._int64_const``).

https://onnx.ai/onnx/operators/onnx__Where.html, https://onnx.ai/onnx/operators/onnx__Less.html
"""
from __future__ import annotations

from converters.lower.context import LowerContext
from converters.lower.elementwise import _check_binary, _int64_const
from converters.lower.registry import lowers

COMPARE = {"Equal": "EQUAL", "Less": "LESS", "LessOrEqual": "LESS_EQUAL", "Greater": "GREATER",
           "GreaterOrEqual": "GREATER_EQUAL", "And": "LOGICAL_AND", "Or": "LOGICAL_OR",
           "Xor": "NOT_EQUAL"}           # on bools, xor is "differs"
SINCE = {"Equal": 1, "Less": 1, "Greater": 1, "LessOrEqual": 12, "GreaterOrEqual": 12, "And": 1, "Or": 1,
         "Xor": 1}


def _lower_compare(ctx: LowerContext, node) -> None:
    a, b = ctx.value(node.inputs[0]), ctx.value(node.inputs[1])
    a, b = _int64_const(ctx, a, b), _int64_const(ctx, b, a)
    ctx.emit(COMPARE[node.op], [a, b], [ctx.output(node.outputs[0])])


for _op, _since in SINCE.items():
    lowers(_op, since=_since, check=_check_binary)(_lower_compare)


@lowers("Not", since=1)
def not_(ctx: LowerContext, node) -> None:
    ctx.emit("LOGICAL_NOT", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])])


@lowers("Where", since=9)
def where(ctx: LowerContext, node) -> None:
    """SELECT_V2 (numpy broadcasting of all three inputs, like ONNX Where)."""
    cond, x, y = (ctx.value(n) for n in node.inputs)
    x, y = _int64_const(ctx, x, y), _int64_const(ctx, y, x)
    ctx.emit("SELECT_V2", [cond, x, y], [ctx.output(node.outputs[0])])
