"""Ranges narrowed to what their int8 readers can tell apart (saturation-aware ranges).

An int8 tensor spends its 255 steps evenly over its calibrated range. When every reader of the
tensor saturates (maps everything beyond some bound to the same output), the values past that
bound carry no information, and the steps spent on them are lost to the values that do. Cutting
the range at the bound is exact (the int8 output does not change for any input) and gives the
rest finer steps; it is what a percentile observer does by luck on such tensors, without its
risk elsewhere. The bounds, per reader (TFLite int8 spec, fixed output parameters of
``rules.FIXED_OUTPUT``):

    LOGISTIC         output steps of 1/256 in [0, 255/256]: sigmoid(x) rounds to 0 below
                     -ln(511) = -6.24 and to 255/256 above ln(255) = 5.54, so [-7, 7] keeps a margin
    TANH             steps of 1/128 in [-1, 127/128]: saturated beyond |x| = 3.12, so [-3.5, 3.5]
    RELU, RELU6,     their clamp: [0, inf), [0, 6], [-1, 1], [0, 1] (an unfused activation)
    RELU_N1_TO_1, RELU_0_TO_1
    HARD_SWISH       0 below -3: [-3, inf)
    ADD / MUL by a   the bound its output has (its fused activation's clamp, or its own readers'
    constant         bound), moved back through the constant: HardSigmoid lowers to
                     MUL(x, 6a) -> ADD(6b) + RELU6 -> MUL(1/6), so its input needs only
                     [-b/a, (1-b)/a] ([-3, 3] for PyTorch's)
    data movement    what its output's readers need (RESHAPE, TRANSPOSE, CONCATENATION, ...)

A tensor keeps its range when any reader needs all of it: a float reader, a graph output, or any
other op (in SiLU ``x * sigmoid(x)``, x feeds a MUL too, so it is not narrowed). Measured on the
zoo: docs/quantization.md.
"""
from __future__ import annotations

import math

from converters.tgraph import TGraph, TOp
from converters.tflite.ranges import ACT_CLAMP

INF = math.inf
SATURATES = {
    "LOGISTIC": (-7.0, 7.0), "TANH": (-3.5, 3.5), "HARD_SWISH": (-3.0, INF),
    "RELU": (0.0, INF), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0),
}
PASS_THROUGH = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "CONCATENATION", "MAX_POOL_2D"}


def narrow(tg: TGraph, ranges: dict[int, tuple], int8_ops: set[int]) -> dict[int, tuple]:
    """``ranges`` (by tensor index) with each tensor cut to the bound its readers can tell apart
    (module doc); ``int8_ops``: ``id()`` of the ops that run in int8. A new dict."""
    readers = tg.consumers_of()
    outputs = set(tg.outputs)
    memo: dict[int, tuple | None] = {}

    def need(t: int) -> tuple | None:
        """(lo, hi) outside which no reader of ``t`` can tell values apart; None: everything."""
        if t not in memo:
            memo[t] = None                      # guards a cycle (none in a lowered graph)
            found = None
            if t not in outputs and readers.get(t):
                bounds = [_reader_bound(tg, op, t, int8_ops, need) for op in readers[t]]
                if all(b is not None for b in bounds):
                    found = (min(b[0] for b in bounds), max(b[1] for b in bounds))
            memo[t] = found
        return memo[t]

    narrowed = dict(ranges)
    for t, (lo, hi) in ranges.items():
        bound = need(t)
        if bound is None:
            continue
        new = (max(lo, bound[0]), min(hi, bound[1]))
        if new[0] < new[1] and new != (lo, hi):
            narrowed[t] = new
    return narrowed


def _reader_bound(tg: TGraph, op: TOp, t: int, int8_ops: set[int], need) -> tuple | None:
    """The values of input ``t`` that ``op`` can tell apart, or None (all of them)."""
    if id(op) not in int8_ops or op.inputs.count(t) != 1:
        return None
    if op.opcode in SATURATES:
        return SATURATES[op.opcode]
    if op.opcode in PASS_THROUGH:
        return need(op.outputs[0])
    if op.opcode in ("ADD", "MUL") and len(op.inputs) == 2:
        return _through_constant(tg, op, t, need)
    return None


def _through_constant(tg: TGraph, op: TOp, t: int, need) -> tuple | None:
    """ADD/MUL of ``t`` and a scalar constant: the output's bound (fused clamp, readers) moved
    back through the constant."""
    other = tg.tensors[op.inputs[1 - op.inputs.index(t)]]
    if not other.is_const or other.data is None or other.data.size != 1:
        return None
    c = float(other.data.reshape(-1)[0])
    out = need(op.outputs[0])
    act = getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0
    if act in ACT_CLAMP:
        lo, hi = ACT_CLAMP[act]
        out = (lo, hi) if out is None else (max(out[0], lo), min(out[1], hi))
    if out is None:
        return None
    if op.opcode == "ADD":
        return (out[0] - c, out[1] - c)
    if c == 0.0 or not math.isfinite(c):
        return None
    ends = (out[0] / c, out[1] / c)
    return (min(ends), max(ends))
