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
    MUL(x, gate)     a gate that is exactly 0 wherever x <= L, because it is computed from x itself:
                     ``gate = k * relu(6)(x * m + c)`` (m, k > 0), so x * gate = 0 for x <= -c/m
                     whatever x is there: [L, inf). HardSwish written out as
                     ``x * relu6(x + 3) / 6`` (paddle2onnx, PyTorch's ``x * hardsigmoid(x)``) lowers
                     to ADD(x, 3)+RELU6 -> MUL(x, gate) -> MUL(1/6): its x needs only [-3, inf),
                     as the HARD_SWISH op's input does (that op has no int8 XNNPACK kernel).

A tensor keeps its range when any reader needs all of it: a float reader, a graph output, or any
other op (in SiLU ``x * sigmoid(x)``, x feeds a MUL too, so it is not narrowed). Measured on the
zoo: docs/quantization.md.
"""
from __future__ import annotations

import math

from converters.calibrate.select import cut
from converters.tflite.ranges import ACT_CLAMP
from converters.tflite.rules import INT8_OPS
from converters.tgraph import TGraph, TOp

INF = math.inf
SATURATES = {
    "LOGISTIC": (-7.0, 7.0), "TANH": (-3.5, 3.5), "HARD_SWISH": (-3.0, INF),
    "RELU": (0.0, INF), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0),
}
PASS_THROUGH = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "CONCATENATION", "MAX_POOL_2D"}
ZERO_FLOOR = {act for act, (lo, _) in ACT_CLAMP.items() if lo == 0.0}     # fused RELU, RELU6


def narrow(tg: TGraph, ranges: dict[int, tuple], int8_ops: set[int]) -> dict[int, tuple]:
    """``ranges`` (by tensor index) with each tensor cut to the bound its readers can tell apart
    (module doc); ``int8_ops``: ``id()`` of the ops that run in int8. A new dict."""
    found = bounds(tg, int8_ops)
    return {t: cut(rng, found.get(t)) for t, rng in ranges.items()}


def bounds(tg: TGraph, int8_ops: set[int]) -> dict[int, tuple]:
    """(lo, hi) by tensor index outside which no reader of the tensor can tell values apart, for
    the tensors that have such a bound (module doc)."""
    readers = tg.consumers_of()
    producer = {o: op for op in tg.ops for o in op.outputs}
    outputs = set(tg.outputs)
    memo: dict[int, tuple | None] = {}

    def need(t: int) -> tuple | None:
        """(lo, hi) outside which no reader of ``t`` can tell values apart; None: everything."""
        if t not in memo:
            memo[t] = None                      # guards a cycle (none in a lowered graph)
            found = None
            if t not in outputs and readers.get(t):
                found_bounds = [_reader_bound(tg, op, t, int8_ops, need, producer) for op in readers[t]]
                if all(b is not None for b in found_bounds):
                    found = (min(b[0] for b in found_bounds), max(b[1] for b in found_bounds))
            memo[t] = found
        return memo[t]

    return {t: b for t in range(len(tg.tensors)) if not tg.tensors[t].is_const and (b := need(t)) is not None}


def bounds_by_name(tg: TGraph) -> dict[str, tuple]:
    """``bounds`` by tensor name, every op that has an int8 kernel taken as int8: what the
    calibration's ``auto`` scorer cuts each candidate range to (``calibrate.select.Scorer``),
    before the build knows which ops stay float (a float reader keeps its input's full range,
    so the scorer may cut a little more than the writer there)."""
    int8_ops = {id(op) for op in tg.ops if op.opcode in INT8_OPS}
    return {tg.tensors[t].name: b for t, b in bounds(tg, int8_ops).items() if tg.tensors[t].name}


def _reader_bound(tg: TGraph, op: TOp, t: int, int8_ops: set[int], need, producer: dict) -> tuple | None:
    """The values of input ``t`` that ``op`` can tell apart, or None (all of them)."""
    if id(op) not in int8_ops or op.inputs.count(t) != 1:
        return None
    if op.opcode in SATURATES:
        return SATURATES[op.opcode]
    if op.opcode in PASS_THROUGH:
        return need(op.outputs[0])
    if op.opcode not in ("ADD", "MUL") or len(op.inputs) != 2:
        return None
    other = op.inputs[1 - op.inputs.index(t)]
    if op.opcode == "MUL" and not tg.tensors[other].is_const:
        floor = _gate_zero_below(tg, producer, other, t)
        return None if floor is None else (floor, INF)
    return _through_constant(tg, op, t, need)


def _scalar(tg: TGraph, i: int) -> float | None:
    c = tg.tensors[i]
    if not c.is_const or c.data is None or c.data.size != 1:
        return None
    value = float(c.data.reshape(-1)[0])
    return value if math.isfinite(value) else None


def _scaled_by(tg: TGraph, producer: dict, i: int) -> tuple[int, float] | None:
    """``(t, k)`` when tensor ``i`` is MUL(t, k) of a scalar constant ``k > 0`` (no fused clamp)."""
    op = producer.get(i)
    if op is None or op.opcode != "MUL" or len(op.inputs) != 2 or _act(op):
        return None
    for pos in (1, 0):
        k = _scalar(tg, op.inputs[pos])
        if k is not None and k > 0:
            return op.inputs[1 - pos], k
    return None


def _gate_zero_below(tg: TGraph, producer: dict, gate: int, x: int) -> float | None:
    """L such that tensor ``gate`` is exactly 0 wherever ``x <= L``, or None. Recognized:
    ``gate = k1 * ... * ADD(x * m, c)`` with a fused RELU/RELU6 on the ADD and k, m > 0 (zero
    when ``x * m + c <= 0``). What else reads the chain's tensors does not matter: the
    product is 0 there whatever x is rounded to, as long as it stays at or below L."""
    while (scaled := _scaled_by(tg, producer, gate)) is not None:
        gate = scaled[0]                       # k * relu(..) is 0 where relu(..) is
    add = producer.get(gate)
    if add is None or add.opcode != "ADD" or len(add.inputs) != 2 or _act(add) not in ZERO_FLOOR:
        return None
    for pos in (1, 0):
        c, t = _scalar(tg, add.inputs[pos]), add.inputs[1 - pos]
        if c is None:
            continue
        m = 1.0
        if t != x and (scaled := _scaled_by(tg, producer, t)) is not None:
            t, m = scaled
        if t == x:
            return -c / m
    return None


def _act(op: TOp) -> int:
    return getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0


def _through_constant(tg: TGraph, op: TOp, t: int, need) -> tuple | None:
    """ADD/MUL of ``t`` and a scalar constant: the output's bound (fused clamp, readers) moved
    back through the constant."""
    c = _scalar(tg, op.inputs[1 - op.inputs.index(t)])
    if c is None:
        return None
    out = need(op.outputs[0])
    act = _act(op)
    if act in ACT_CLAMP:
        lo, hi = ACT_CLAMP[act]
        out = (lo, hi) if out is None else (max(out[0], lo), min(out[1], hi))
    if out is None:
        return None
    if op.opcode == "ADD":
        return (out[0] - c, out[1] - c)
    if c == 0.0:
        return None
    ends = (out[0] / c, out[1] / c)
    return (min(ends), max(ends))
