"""Attention-mask fills in the tensors a Softmax reads: seen by the observers as int8 will hold them.

A masked attention adds a fill to the positions a query must not see before its Softmax: -inf,
or a finite stand-in (-1e4, -1e9, ``torch.finfo(torch.float32).min`` = -3.4e38). In float those
positions get exp() = 0 whatever the fill. Observed as they are, the finite fills set the low end
of the tensor's range: -1e9 leaves the live scores a fraction of one int8 step (a 4-way masked
attention: 3.6 dB), and -3.4e38 gives a scale LiteRT aborts on. -inf was dropped by the
observers (non-finite), which left the range to the live scores; int8 then saturates the masked
positions to its low end, and each gets exp(lo - row max), not 0 (the same graph: the wrong
output).

What int8 can do is saturate the fill to a value low enough to vanish: a position ``D`` below
its row's largest score weighs exp(-D), and ``T`` of them (the row length) stay below half an
int8 Softmax output step (1/512) when ``D = ln(512 T)`` (11.5 for 197 tokens). So each value
more than ``MASK_GAP`` below the sample's largest score (exp() = 0 there in float32 long
before: a fill, not a score) is seen as ``min(live low, lowest row max - D)``: the range reaches
just far enough down for the masked positions to vanish, and no further. Only tensors a Softmax
reads directly (or through ``COPIES``) are touched; a fill that passes a Reshape between its Add
and the Softmax keeps its range.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

MASK_GAP = 1e3          # exp(-104) is 0 in float32: a value this far below the max is masked
HALF_STEP = 512.0       # the int8 Softmax output's steps are 1/256 (TFLite int8 spec)
COPIES = {"Identity"}


def softmax_inputs(model: onnx.ModelProto) -> dict[str, tuple[int, bool]]:
    """{tensor: (axis, flattened)} of the tensors a Softmax reads: its ``axis`` and whether the
    axes from it on form the row (opset < 13) or it alone does."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    producer = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for node in model.graph.node:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
        t = node.input[0]
        found[t] = (axis, opset < 13)
        while t in producer and producer[t].op_type in COPIES:
            t = producer[t].input[0]
            found[t] = (axis, opset < 13)
    return found


def saturate(values: np.ndarray, axis: int, flattened: bool) -> np.ndarray:
    """``values`` with its masked positions (module doc) set to ``min(live low, lowest row max
    - ln(512 T))``; the array itself when it holds none."""
    values = np.asarray(values)
    if values.ndim == 0 or not values.size or values.dtype.kind != "f":
        return values
    axis %= values.ndim
    axes = tuple(range(axis, values.ndim)) if flattened else (axis,)
    finite = np.where(np.isnan(values), -np.inf, values)
    top = float(finite.max())
    if not math.isfinite(top):
        return values
    masked = finite < top - MASK_GAP
    if not masked.any():
        return values
    rows = np.max(np.where(masked, -np.inf, finite), axis=axes, keepdims=True)
    live_rows = rows[np.isfinite(rows)]
    row_len = int(np.prod([values.shape[a] for a in axes]))
    live_lo = float(np.min(finite[~masked]))
    floor = min(live_lo, float(live_rows.min()) - math.log(HALF_STEP * row_len))
    return np.where(masked, np.float32(floor), values).astype(values.dtype, copy=False)


def clip_addends(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> None:
    """Narrow, in place, the range of an activation added to a Softmax's input whose low end is a
    fill (more than ``MASK_GAP`` below the sum's): to ``sum low - other addend's high``, below
    which the int8 sum saturates at its low end whatever the other addend is, exactly as the
    fill does. Left at -1e9, its int8 step would set the ADD's common input scale and round
    the scores it is added to away (``(1 - mask) * -1e9`` from an attention-mask input)."""
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    read = softmax_inputs(model)
    for node in model.graph.node:
        if node.op_type != "Add" or node.output[0] not in read or node.output[0] not in ranges:
            continue
        out_lo = ranges[node.output[0]][0]
        for k, name in enumerate(node.input[:2]):
            other = node.input[1 - k]
            other_hi = ranges[other][1] if other in ranges else _finite_max(consts.get(other))
            if name in ranges and other_hi is not None and ranges[name][0] < out_lo - MASK_GAP:
                ranges[name] = (min(out_lo - other_hi, ranges[name][1]), ranges[name][1])


def _finite_max(values) -> float | None:
    if values is None or not np.issubdtype(np.asarray(values).dtype, np.floating):
        return None
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite.max()) if finite.size else None
