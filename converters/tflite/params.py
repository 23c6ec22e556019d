"""Per-tensor int8 activation parameters: from a range, and safe ones for degenerate ranges.

``activation_params(lo, hi)``: asymmetric int8 over the range widened to contain 0 (zero padding
and ReLU stay exact), the scale rounded to float32 *before* the zero point is derived from it, so
the zero point is the one the stored scale implies.

**Degenerate ranges.** A tensor whose calibration range is (near-)constant -- an all-zero layer, a
dead ReLU, outputs ~1e-14 -- used to get a 1e-8 range floor, i.e. a scale of ~4e-11: the layer
producing it then needs a requantization multiplier (input scale x weight scale / output scale)
of millions, which XNNPACK refuses (it takes multipliers below 256: ``xnn_create_convolution2d_*``
"requantization scale ... is greater or equal to 256.0") and the reference ADD kernel cannot
represent. ``assign`` instead floors each group's scale *relative to its producers' inputs*:

    scale >= product / MULTIPLIER_LIMIT

where ``product`` is input scale x largest weight scale (CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, TRANSPOSE_CONV), the two input scales (MUL), or the largest input scale (any
other op). A range that is fine keeps its natural scale; a degenerate one gets the floor (or
1/255 when nothing produces it from int8 data), and one ``DegenerateRangeWarning`` names every
such tensor: values below half its scale become exact zeros in int8.
"""
from __future__ import annotations

import warnings

import numpy as np

from converters.tflite.rules import SAME_PARAMS, WEIGHTS, data_inputs
from converters.tgraph import QParams, TGraph

MULTIPLIER_LIMIT = 255.0        # XNNPACK refuses >= 256 (check.XNNPACK_MULTIPLIER_MAX)


class DegenerateRangeWarning(UserWarning):
    """Tensors had a (near-)constant calibration range; they got safe scales (named in the text)."""


def activation_params(lo: float, hi: float, floor: float = 0.0) -> QParams:
    """int8 parameters covering [min(lo, 0), max(hi, 0)], scale at least ``floor`` (and > 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = float(np.float32(max((hi - lo) / 255.0, floor)))
    if scale <= 0.0 or not np.isfinite(scale):
        scale = float(np.float32(1.0 / 255.0))
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return QParams.per_tensor(scale, zero_point)


def weight_scale_max(tg: TGraph, op) -> float:
    """The largest per-channel weight scale ``weights.per_channel_int8`` will give ``op``."""
    w_i, axis, _ = WEIGHTS[op.opcode]
    w = tg.tensors[op.inputs[w_i]].data
    if w is None:
        return 1.0
    peak = float(max(w.max(), -w.min())) if w.size else 0.0     # = max |w|, without an |w| copy
    return peak / 127.0 if peak > 0 else 1.0 / 127.0


def _product_scale(tg: TGraph, op, scale_of) -> float:
    ins = [op.inputs[p] for p in data_inputs(op.opcode, op.inputs) if p < len(op.inputs)]
    ins = [i for i in ins if i >= 0]
    scales = [scale_of(i) for i in ins]
    scales = [s for s in scales if s is not None]
    if not scales:
        return 0.0
    if op.opcode in WEIGHTS:
        return scales[0] * weight_scale_max(tg, op)
    if op.opcode == "MUL" and len(scales) == 2:
        return scales[0] * scales[1]
    return max(scales)


def assign(tg: TGraph, int8_ops: set[int], find, members: dict[int, list[int]], fixed: dict,
           ranges: dict[int, tuple]) -> dict[int, QParams]:
    """Group root -> its one QParams (fixed, natural, or floored for a degenerate range)."""
    out = {root: (QParams.per_tensor(*fixed[root]) if root in fixed else activation_params(*ranges[root]))
           for root in members}
    producers = [(op, o) for op in tg.ops if id(op) in int8_ops and op.opcode not in SAME_PARAMS
                 for o in op.outputs if find(o) in out]

    def scale_of(i: int):
        t = tg.tensors[i]
        if t.is_const:
            data = t.data
            return None if data.dtype.kind != "f" else float(activation_params(data.min(), data.max()).scale[0])
        q = out.get(find(i))
        return None if q is None else float(q.scale[0])

    degenerate: set[int] = set()
    for _sweep in range(3):           # a floor raises downstream products; ops are in order, so
        changed = False               # one sweep settles a chain, more only for odd group shapes
        floors: dict[int, float] = {}
        for op, o in producers:
            root = find(o)
            floors[root] = max(floors.get(root, 0.0), _product_scale(tg, op, scale_of) / MULTIPLIER_LIMIT)
        for root, floor in floors.items():
            if root in fixed or out[root].scale[0] >= floor and not _flat(ranges[root]):
                continue
            q = activation_params(*ranges[root], floor=floor)
            if q.scale[0] != out[root].scale[0] or root not in degenerate:
                changed = True
            out[root] = q
            degenerate.add(root)
        if not changed:
            break
    degenerate |= {root for root in out if root not in fixed and _flat(ranges[root])}   # no int8 producer
    _warn(tg, degenerate, members, out, ranges)
    return out


def _flat(rng: tuple) -> bool:
    return min(rng[0], 0.0) == max(rng[1], 0.0)


def _warn(tg: TGraph, degenerate: set[int], members: dict, out: dict, ranges: dict) -> None:
    if not degenerate:
        return
    def name(root: int) -> str:       # the shortest member name: the ONNX one, not a lowering copy
        return min((tg.tensors[i].name for i in members.get(root, [root])), key=len)

    names = [f"'{name(r)}' (range {ranges[r][0]:.3g}..{ranges[r][1]:.3g} -> scale "
             f"{float(out[r].scale[0]):.3g})" for r in sorted(degenerate)]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    warnings.warn(f"{len(names)} tensor(s) have a (near-)constant calibration range: {shown}. They get "
                  "scales the int8 kernels accept (relative to their inputs); values below half a "
                  "scale step become 0. Check the calibration data, or whether these layers are dead.",
                  DegenerateRangeWarning, stacklevel=4)
