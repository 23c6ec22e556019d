"""Ranges for every float tensor of a lowered graph, by TFLite tensor index.

Tensors that hold an ONNX value take the calibration range for that name. Tensors the lowering
created (temporaries of decompositions, layout copies, padded inputs) get a range in one of two
ways, in this order:

1. **measured**: when calibration samples are given, the float TFLite model runs on them in LiteRT
   (with the watched tensors as extra outputs) and each temporary's min/max is recorded (and, for
   the inputs of layers with weights, each channel's mean: ``quantize`` uses it for bias correction);
2. **derived**: otherwise exact interval rules per opcode: data movement keeps the input range,
   activations map it through their function, arithmetic with a constant maps it exactly. Ops
   with two activation inputs get no derived range (intervals would be loose), which makes them
   float islands in the int8 graph rather than badly quantized ones.
"""
from __future__ import annotations

import numpy as np

from converters.tflite.rules import SAME_PARAMS, data_inputs
from converters.tflite.writer import serialize
from converters.tgraph import TGraph
from core.litert import make_interpreter

ACT_CLAMP = {1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}   # ActivationFunctionType
UNARY_FN = {
    "RELU": lambda x: np.maximum(x, 0), "RELU6": lambda x: np.clip(x, 0, 6),
    "RELU_N1_TO_1": lambda x: np.clip(x, -1, 1), "RELU_0_TO_1": lambda x: np.clip(x, 0, 1),
    "LOGISTIC": lambda x: 1 / (1 + np.exp(-x)), "TANH": np.tanh,
    "HARD_SWISH": lambda x: x * np.clip(x + 3, 0, 6) / 6, "ABS": np.abs, "NEG": np.negative,
    "GELU": lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3))),
    "EXP": np.exp, "ELU": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
}
WITHIN_INPUT = {"MEAN", "AVERAGE_POOL_2D", "SOFTMAX"}


def union(a, b):
    if a is None or b is None:
        return a if b is None else b
    return (min(a[0], b[0]), max(a[1], b[1]))


MOVEMENT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "SLICE", "STRIDED_SLICE", "PAD"}


def derive(tg: TGraph, known: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Fill ``known`` with exact interval rules; returns it.

    A backward sweep first gives the input of a pure data-movement op (the layout copy in front of
    a graph output, a 1-D conv's 2-D view) its output's range; then a forward sweep applies the
    per-opcode rules.
    """
    for op in reversed(tg.ops):
        _backward_add(tg, op, known)
        if op.opcode not in MOVEMENT and op.opcode != "CONCATENATION" or op.outputs[0] not in known:
            continue
        # CONCATENATION shares one set of int8 params between inputs and output anyway.
        for i in op.inputs if op.opcode == "CONCATENATION" else op.inputs[:1]:
            if i >= 0 and i not in known and not tg.tensors[i].is_const:
                known[i] = known[op.outputs[0]]
    for op in tg.ops:
        rng = _rule(tg, op, known)
        if rng is None:
            continue
        act = getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0
        if act in ACT_CLAMP:
            lo, hi = ACT_CLAMP[act]
            rng = (float(np.clip(rng[0], lo, hi)), float(np.clip(rng[1], lo, hi)))
        for out in op.outputs:
            known.setdefault(out, rng)
    return known


def _backward_add(tg: TGraph, op, known) -> None:
    """ADD of a constant: the input's range is the output's minus the constant's."""
    if op.opcode != "ADD" or op.outputs[0] not in known or op.inputs[0] in known:
        return
    x, c = op.inputs
    if tg.tensors[x].is_const or not tg.tensors[c].is_const or getattr(
            op.options, "fusedActivationFunction", 0):
        return
    cr, (lo, hi) = _const_range(tg, c), known[op.outputs[0]]
    if cr is not None:
        known[x] = (lo - cr[1], hi - cr[0])


def _rule(tg: TGraph, op, known):
    ins = [op.inputs[i] for i in data_inputs(op.opcode, op.inputs) if i < len(op.inputs)]
    ins = [i for i in ins if i >= 0]
    if op.opcode in SAME_PARAMS or op.opcode in WITHIN_INPUT:
        rng = None
        for i in ins:
            rng = union(rng, known.get(i) if not tg.tensors[i].is_const else _const_range(tg, i))
        if op.opcode == "PAD":
            rng = union(rng, (0.0, 0.0))
        return rng
    if op.opcode in UNARY_FN and ins and ins[0] in known:
        lo, hi = known[ins[0]]
        grid = np.concatenate([np.linspace(lo, hi, 2049), [lo, hi]])
        with np.errstate(over="ignore"):
            vals = UNARY_FN[op.opcode](grid)
        return (float(np.min(vals)), float(np.max(vals)))
    if op.opcode in ("ADD", "SUB", "MUL") and len(ins) == 2:
        return _arith(tg, op.opcode, ins, known)
    return None


def _const_range(tg: TGraph, i: int):
    data = tg.tensors[i].data
    if data is None or not np.issubdtype(data.dtype, np.floating):
        return None
    return (float(data.min()), float(data.max()))


def _arith(tg: TGraph, opcode: str, ins, known):
    a, b = ins
    consts = [tg.tensors[i].is_const for i in ins]
    if opcode == "MUL" and a == b and a in known:
        lo, hi = known[a]
        top = max(lo * lo, hi * hi)
        return (0.0 if lo <= 0 <= hi else min(lo * lo, hi * hi), top)
    if consts.count(True) != 1:          # two activations: no exact interval, see module doc
        return None
    ra = _const_range(tg, a) if consts[0] else known.get(a)
    rb = _const_range(tg, b) if consts[1] else known.get(b)
    if ra is None or rb is None:
        return None
    if opcode == "ADD":
        return (ra[0] + rb[0], ra[1] + rb[1])
    if opcode == "SUB":
        return (ra[0] - rb[1], ra[1] - rb[0])
    corners = [ra[0] * rb[0], ra[0] * rb[1], ra[1] * rb[0], ra[1] * rb[1]]
    return (min(corners), max(corners))


def _channel_mean(v: np.ndarray) -> np.ndarray:
    """Mean of each channel (last axis). Not through BLAS (a product with ones would be faster
    alone, but OpenBLAS worker threads then spin and slow the interpreter's own threads 2x)."""
    rows = v.reshape(-1, v.shape[-1])
    return rows.sum(axis=0).astype(np.float64) / len(rows)


def measure(tg: TGraph, samples: list[dict], feeds_for, tensors=None) -> dict[int, tuple]:
    """Min/max of float tensors over ``samples``, running the float model in LiteRT.

    (``measure_stats`` also returns per-channel means.)"""
    return measure_stats(tg, samples, feeds_for, tensors=tensors)[0]


def measure_stats(tg: TGraph, samples: list[dict], feeds_for, means_of: frozenset = frozenset(),
                  tensors=None) -> tuple[dict[int, tuple], dict[int, np.ndarray]]:
    """(min/max of the ``tensors`` (None: every float activation), per-channel means of the
    ``means_of`` tensors), over ``samples``.

    The float model is written with every watched tensor as an extra graph output and run with
    XNNPACK: an output must be materialised, so the delegate computes it (reading intermediates
    through ``preserve_all_tensors`` would need the delegate off, and the plain kernels are ~5x
    slower on a CNN: that was half of a MobileNetV2 conversion).
    """

    floats = [i for i, t in enumerate(tg.tensors) if not t.is_const and t.dtype == "float32"]
    minmax = set(floats if tensors is None else tensors) & set(floats)
    watch = sorted((minmax | set(means_of)) - set(tg.inputs))
    flat = serialize(tg, description="ganglion float (range measurement)", extra_outputs=watch)
    interp = make_interpreter(flat, num_threads=2)
    # interp.tensor(i)() is a view of the output buffer: no copy of ~40 MB per MobileNetV2 sample
    # (get_tensor's copies were a quarter of this loop). Views must be gone before the next
    # invoke, which LiteRT refuses while one is alive; _observe holds them only inside its call.
    views = {i: interp.tensor(i) for i in watch}
    found: dict[int, tuple] = {}
    sums: dict[int, np.ndarray] = {}
    for sample in samples:
        feeds = feeds_for(sample)
        for index, value in feeds.items():
            interp.set_tensor(index, value)
        interp.invoke()
        for i, view in views.items():
            _observe(i, view(), minmax, means_of, found, sums)
        for i, value in feeds.items():
            _observe(i, np.asarray(value), minmax, means_of, found, sums)
    return found, {i: s / len(samples) for i, s in sums.items()}


def _observe(i: int, v: np.ndarray, minmax, means_of, found: dict, sums: dict) -> None:
    if i in minmax:
        found[i] = union(found.get(i), (float(v.min()), float(v.max())))
    if i in means_of and v.ndim:
        sums[i] = sums.get(i, 0.0) + _channel_mean(v)
