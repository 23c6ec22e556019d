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


def per_channel_int8(t: TTensor, axis: int, carried=None, owner: str = "") -> np.ndarray:
    """Quantize the float weights ``t`` in place: per-channel (along ``axis``) symmetric int8 in
    [-127, 127], zero point 0. Returns the float32 scales (the int8 path needs them for the bias).

    ``carried``: the ``carried.ChannelGrid`` an already-quantized model stored these weights with
    (per output channel); its int8 values are kept while the weights are still on that grid (a
    folded BatchNormalization rescales a channel's scale, see ``carried.on_grid``)."""
    if carried is not None:
        kept = on_grid(t.data, axis, carried)
        if kept is not None:
            t.data, scale = kept
            t.dtype, t.quant = "int8", QParams(scale, np.zeros(len(scale), np.int64), axis)
            return scale
        warn(f"weights of '{owner}' are requantized: they are no longer the model's int8 values times its "
             "scales (per output channel, up to a folded BatchNormalization's factor)")
    w = t.data.astype(np.float64)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scale = np.abs(moved).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0 / 127.0)   # an all-zero channel: any scale is exact
    shape = [1] * w.ndim
    shape[axis] = -1
    t.data = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    t.dtype = "int8"
    t.quant = QParams(scale.astype(np.float32), np.zeros(len(scale), np.int64), axis)
    return scale.astype(np.float32)


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
