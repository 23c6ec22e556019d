"""Weight-only modes: float16 weights and dynamic-range (int8 weights, float activations).

* ``float16``: every float32 constant with at least ``MIN_ELEMENTS`` values is stored as float16
  and expanded by a DEQUANTIZE op at load time (XNNPACK folds these into packed fp32 weights, so
  the model halves in size and runs at float speed).
* ``dynamic``: the filters of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED become per-channel
  symmetric int8; the kernels' hybrid paths quantize activations on the fly. Biases stay float.

``per_channel_int8`` is the one weight quantizer: the full-integer path (``quantize.py``) uses it too.
"""
from __future__ import annotations

import numpy as np

from converters.carried import on_grid, warn
from converters.tflite.rules import WEIGHTS
from converters.tgraph import QParams, TGraph, TOp, TTensor

MIN_ELEMENTS = 16
CHUNK_ELEMENTS = 1 << 20     # float64 rows quantized at a time (8 MB)
DYNAMIC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def to_float16(tg: TGraph) -> None:
    expanded: dict[int, int] = {}
    new_ops: list[TOp] = []
    for op in tg.ops:
        for pos, i in enumerate(op.inputs):
            t = tg.tensors[i] if i >= 0 else None
            if t is None or not t.is_const or t.dtype != "float32" or t.data.size < MIN_ELEMENTS:
                continue
            if i not in expanded:
                half = tg.add(TTensor(t.name + "/fp16", t.shape, "float16",
                                      data=t.data.astype(np.float16)))
                # The original index becomes the fp32 result of DEQUANTIZE (no data).
                t.data = None
                new_ops.append(TOp("DEQUANTIZE", [half], [i], None, op.node))
                expanded[i] = i
        new_ops.append(op)
    # DEQUANTIZE of constants must come first: hoist them (they have no activation inputs).
    tg.ops[:] = [o for o in new_ops if o.opcode == "DEQUANTIZE" and tg.tensors[o.inputs[0]].is_const] + \
                [o for o in new_ops if not (o.opcode == "DEQUANTIZE" and tg.tensors[o.inputs[0]].is_const)]


def per_channel_int8(t: TTensor, axis: int, carried=None, owner: str = "", min_scale=0.0) -> np.ndarray:
    """Quantize the float weights ``t`` in place: per-channel (along ``axis``) symmetric int8 in
    [-127, 127], zero point 0. Returns the float32 scales (the int8 path needs them for the bias).

    ``carried``: the ``carried.ChannelGrid`` an already-quantized model stored these weights with
    (per output channel); its int8 values are kept while the weights are still on that grid (a
    folded BatchNormalization rescales a channel's scale, see ``carried.on_grid``).

    ``min_scale``: a floor per channel (or one for all), from ``quantize.weight_scale_floor``: a
    dead channel's weights (~1e-39, float32 subnormals, in trained models) would otherwise get a
    subnormal scale whose bias scale cannot be stored exactly."""
    if carried is not None:
        kept = on_grid(t.data, axis, carried)
        if kept is not None and np.all(kept[1] >= min_scale):
            t.data, scale = kept
            t.dtype, t.quant = "int8", QParams(scale, np.zeros(len(scale), np.int64), axis)
            return scale
        warn(f"weights of '{owner}' are requantized: they are no longer the model's int8 values times its "
             "scales (per output channel, up to a folded BatchNormalization's factor)")
    w = t.data
    scale = _absmax(w, axis).astype(np.float64) / 127.0
    scale = np.where(scale > 0, scale, 1.0 / 127.0)   # an all-zero channel: any scale is exact
    scale = np.maximum(scale, np.asarray(min_scale, np.float64))
    t.data = _to_int8(w, axis, scale)
    t.dtype = "int8"
    t.quant = QParams(scale.astype(np.float32), np.zeros(len(scale), np.int64), axis)
    return scale.astype(np.float32)


def _absmax(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel max |w| without an |w| copy: max(max, -min) is exact in the weights' dtype."""
    others = tuple(a for a in range(w.ndim) if a != axis)
    if w.size == 0:
        return np.zeros(w.shape[axis], w.dtype)
    return np.maximum(w.max(axis=others), -w.min(axis=others))


def _to_int8(w: np.ndarray, axis: int, scale: np.ndarray) -> np.ndarray:
    """round(w / scale) clipped to [-127, 127] as int8, computed in float64 (the rounding the
    format's reference quantizer uses) a block of rows at a time: a float64 copy of a 100M-element
    matrix (VGG-19's fc6) would be 800 MB and three passes over it (issue 8)."""
    out = np.empty(w.shape, np.int8)
    shape = [1] * w.ndim
    shape[axis] = -1
    scale = scale.reshape(shape)
    rows = max(1, CHUNK_ELEMENTS // max(1, w.size // w.shape[0]))
    for start in range(0, w.shape[0], rows):
        block = slice(start, start + rows)
        tmp = np.divide(w[block], scale[block] if axis == 0 else scale, dtype=np.float64)
        np.round(tmp, out=tmp)
        np.clip(tmp, -127, 127, out=tmp)
        out[block] = tmp
    return out


def to_dynamic(tg: TGraph) -> None:
    for op in tg.ops:
        if op.opcode not in DYNAMIC_OPS:
            continue
        w_i, axis, _ = WEIGHTS[op.opcode]
        t = tg.tensors[op.inputs[w_i]]
        if not t.is_const or t.dtype not in ("float32", "int8"):
            continue
        if t.dtype == "float32":          # a weight shared by several ops is quantized once
            per_channel_int8(t, axis, tg.carried.get(op.node), op.node)
        if op.opcode == "FULLY_CONNECTED":
            op.options.asymmetricQuantizeInputs = True
