"""What the TFLite build reads from the onnxruntime calibration pass instead of measuring it in LiteRT.

``ranges.measure_stats`` runs the float TFLite model over every calibration sample for two things:
the range of each tensor the lowering created (no ONNX tensor holds it), and the per-channel mean
of each layer input (bias correction). That second float pass cost as much as the first one
(a 640x640 detector, 100 samples: 21 of 44 s). Most of it is already known from the first pass
(``calibrate.collect_stats``), because the lowering's own tensors are mostly the ONNX values moved
around:

    copied_ranges(tg, known, missing) -> {index: range}
        a float tensor made by TRANSPOSE / RESHAPE / SQUEEZE / EXPAND_DIMS holds exactly its
        input's values, so its range is its input's (and the input's is the output's); zero
        PAD adds zeros: the input's range with 0 (what LiteRT measured too); MUL/ADD/SUB by a
        constant holding one value (HardSigmoid's decomposition) maps the ends, then the fused
        activation clamps them (both monotonic: the ends of the values are the values of the ends);
        by a per-channel constant (a BatchNormalization no layer absorbed) the same per channel,
        from the input's per-channel ranges (``channel_ranges``, ``calibrate/channels.py``)
    layer_means(tg, layer_inputs, means) -> ({index: mean per channel}, unresolved)
        a layer input named after an ONNX tensor takes that tensor's channel means (its channel
        axis through the layout permutation ``TTensor.perm``); one made by a TRANSPOSE, a zero
        PAD that leaves the channels alone (each channel's sum is unchanged, its count grows:
        mean * in/out elements) or a RESHAPE that keeps the channel axis is followed back.

Whatever is left (a range only an arithmetic op of the lowering produces, a mean behind a SLICE)
is measured in LiteRT as before, for those tensors only.
"""
from __future__ import annotations

import numpy as np

from converters.tflite.ranges import ACT_CLAMP, union
from converters.tgraph import TGraph

COPIES = frozenset({"TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"})


def copied_ranges(tg: TGraph, known: dict[int, tuple], missing, channel_ranges=None) -> dict[int, tuple]:
    """Ranges of the ``missing`` tensors that hold (padded) copies of tensors of ``known``, or
    whose copy is known (the NHWC result a layout TRANSPOSE turns into an ONNX output), module doc."""
    missing, found = set(missing), {}
    for op in reversed(tg.ops):               # backward: a copy's source holds the same values
        if op.opcode in COPIES and op.inputs and op.inputs[0] in missing and op.outputs:
            rng = found.get(op.outputs[0], known.get(op.outputs[0]))
            if rng is not None:
                found[op.inputs[0]] = rng
    for op in tg.ops:                         # forward, in graph order: a copy of a copy follows its source
        if not op.outputs or op.outputs[0] not in missing or op.outputs[0] in found or not op.inputs:
            continue
        source = found.get(op.inputs[0], known.get(op.inputs[0]))
        if source is None:
            continue
        if op.opcode in COPIES:
            found[op.outputs[0]] = source
        elif op.opcode == "PAD":
            pads = _paddings(tg, op)
            if pads is not None:
                found[op.outputs[0]] = union(source, (0.0, 0.0)) if pads.any() else source
        elif (rng := _arithmetic(tg, op, lambda i: found.get(i, known.get(i)), channel_ranges or {})) is not None:
            found[op.outputs[0]] = rng
    return found


def _arithmetic(tg: TGraph, op, range_of, channel_ranges: dict) -> tuple | None:
    """The exact range of ``x (op) c`` for a constant ``c`` holding one value, or one per channel
    of ``x`` along one axis when ``channel_ranges`` has ``x``'s along it, in float32 as the
    kernels compute it, with the fused activation's clamp; None for any other op."""
    if op.opcode not in ("MUL", "ADD", "SUB") or len(op.inputs) != 2 or min(op.inputs) < 0:
        return None
    consts = [tg.tensors[i].data for i in op.inputs]
    if [c is None for c in consts].count(True) != 1:
        return None
    k = 0 if consts[0] is not None else 1
    c, x = consts[k], tg.tensors[op.inputs[1 - k]]
    if not c.size or not np.issubdtype(c.dtype, np.floating):
        return None
    if c.min() == c.max():
        rng = range_of(op.inputs[1 - k])
        c = np.float32(c.reshape(-1)[0])
    elif (axis := _channel_axis(x.shape, c.shape)) is not None:         # one value per channel
        rng = channel_ranges.get((x.name, x.perm[axis] if x.perm else axis))
        c = c.reshape(-1).astype(np.float32)
    else:
        return None
    if rng is None or np.size(rng[0]) not in (1, np.size(c)):
        return None
    ends = np.array(rng, np.float32)
    ends = {"MUL": ends * c, "ADD": ends + c, "SUB": ends - c if k == 1 else c - ends}[op.opcode]
    act = getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0
    if act and act not in ACT_CLAMP:
        return None
    lo, hi = np.clip([ends.min(), ends.max()], *ACT_CLAMP[act]) if act else (ends.min(), ends.max())
    return (float(lo), float(hi))


def _channel_axis(x_shape, c_shape) -> int | None:
    """The axis of ``x`` along which a constant of ``c_shape`` (broadcast numpy-style) varies, when
    it varies along exactly one, with one value per element of ``x`` there; else None."""
    if len(c_shape) > len(x_shape):
        return None
    shape = (1,) * (len(x_shape) - len(c_shape)) + tuple(c_shape)
    varying = [i for i, d in enumerate(shape) if d != 1]
    return varying[0] if len(varying) == 1 and x_shape[varying[0]] == shape[varying[0]] else None


def layer_means(tg: TGraph, layer_inputs, means: dict[tuple[str, int], np.ndarray]
                ) -> tuple[dict[int, np.ndarray], set[int]]:
    """({layer input: its channel means}, the layer inputs ``means`` cannot tell)."""
    producer = {out: op for op in tg.ops for out in op.outputs}
    found, unresolved = {}, set()
    for i in layer_inputs:
        mean = _follow(tg, producer, i, len(tg.tensors[i].shape) - 1, means)
        if mean is None:
            unresolved.add(i)
        else:
            found[i] = mean
    return found, unresolved


def _follow(tg: TGraph, producer: dict, i: int, axis: int, means: dict) -> np.ndarray | None:
    """Channel means along ``axis`` of tensor ``i``, from the ONNX tensor it copies, or None."""
    factor = 1.0
    while axis >= 0:
        t = tg.tensors[i]
        mean = means.get((t.name, t.perm[axis] if t.perm else axis))
        if mean is not None:
            return mean * factor if len(mean) == t.shape[axis] else None
        op = producer.get(i)
        if op is None:
            return None
        source = tg.tensors[op.inputs[0]]
        if op.opcode == "TRANSPOSE" and tg.tensors[op.inputs[1]].is_const:
            axis = int(np.asarray(tg.tensors[op.inputs[1]].data).reshape(-1)[axis])
        elif (op.opcode == "PAD" and (pads := _paddings(tg, op)) is not None and not pads[axis].any()
              and _static(source.shape) and _static(t.shape)):
            factor *= float(np.prod(source.shape)) / float(np.prod(t.shape))
        elif (op.opcode == "RESHAPE" and axis == len(t.shape) - 1 and source.shape
              and source.shape[-1] == t.shape[-1]):
            axis = len(source.shape) - 1          # row-major: the last index of every value is kept
        else:
            return None
        i = op.inputs[0]
    return None


def _paddings(tg: TGraph, op) -> np.ndarray | None:
    """PAD's constant [rank, 2] paddings, or None when they are not a constant."""
    if len(op.inputs) < 2 or op.inputs[1] < 0 or not tg.tensors[op.inputs[1]].is_const:
        return None
    return np.asarray(tg.tensors[op.inputs[1]].data).reshape(-1, 2)


def _static(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) and d > 0 for d in shape)
