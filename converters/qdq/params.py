"""QDQ quantization parameters, in ONNX's QuantizeLinear/DequantizeLinear form, from the shared ones.

The numbers come from the TFLite quantizer (``converters.tflite``), never from a second formula:

    activation  the int8 (scale, zero point) ``tflite.params.activation_params`` gives a range
                (asymmetric, range widened to contain 0, float32 scale), or the one a TFLite
                build chose (``shared.py``), expressed for the profile: int8 as is, uint8 with
                the zero point moved by 128 (the same grid), or symmetric int8 (TensorRT: zero
                point 0) over the interval that grid covers
    weight      per output channel, symmetric, [-127, 127], zero point 0: ``tflite.weights.
                per_channel_int8`` (an all-zero channel gets 1/127 there and here), or the
                scales a TFLite build chose
    bias        int32, zero point 0, scale = input scale * weight scale (per channel)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.carried import WeightGrid, on_grid, warn
from converters.tgraph import TTensor
from converters.tflite.params import activation_params
from converters.tflite.weights import per_channel_int8

INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray            # float32, scalar or [channels]
    zero_point: np.ndarray       # int8 (activations, weights) or int32 (bias), same shape
    axis: int | None = None      # the channel axis of a per-channel tensor

    def to_dict(self) -> dict:
        return {"scale": np.asarray(self.scale).tolist(), "zero_point": np.asarray(self.zero_point).tolist(),
                "axis": self.axis}


def int8_grid(lo: float, hi: float) -> tuple[float, int]:
    """The shared int8 (scale, zero point) for an observed range (TFLite's own function)."""
    q = activation_params(lo, hi)
    return float(q.scale[0]), int(q.zero_point[0])


def covered(scale: float, zero_point: int) -> tuple[float, float]:
    """The interval an int8 (scale, zero point) represents: [(-128 - zp) s, (127 - zp) s]."""
    return (-128 - zero_point) * scale, (127 - zero_point) * scale


def for_profile(scale: float, zero_point: int, *, symmetric: bool, dtype: str = "int8") -> QuantParams:
    """The int8 grid (scale, zero point) as the profile stores it (see module doc)."""
    if symmetric:
        if dtype != "int8":
            raise ValueError("symmetric activations are int8")
        lo, hi = covered(scale, zero_point)
        return symmetric_params(max(-lo, hi))
    if dtype == "uint8":
        return QuantParams(np.float32(scale), np.uint8(zero_point + 128))
    return QuantParams(np.float32(scale), np.int8(zero_point))


def symmetric_params(amax: float) -> QuantParams:
    """Symmetric int8 over [-amax, amax]: scale amax/127, zero point 0."""
    scale = float(np.float32(amax / 127.0))
    return QuantParams(np.float32(scale if scale > 0 and np.isfinite(scale) else 1.0 / 127.0), np.int8(0))


def activation(lo: float, hi: float, *, symmetric: bool, dtype: str = "int8") -> QuantParams:
    """Per-tensor parameters for an observed range (lo, hi); ``dtype`` int8 or uint8."""
    return for_profile(*int8_grid(lo, hi), symmetric=symmetric, dtype=dtype)


def weight(w: np.ndarray, axis: int | None, scales: np.ndarray | None = None) -> tuple[np.ndarray, QuantParams]:
    """Symmetric int8 weights, per channel along ``axis`` (None: per tensor), with the shared
    quantizer; ``scales``: per-channel scales a TFLite build chose for them (one per channel)."""
    w = np.asarray(w, dtype=np.float32)
    flat = w.reshape(1, -1) if axis is None else w
    along = 0 if axis is None else axis % w.ndim
    if scales is None:
        t = TTensor("weight", flat.shape, data=flat.copy())
        scales = per_channel_int8(t, along)
        q = t.data
    else:
        shape = [1] * flat.ndim
        shape[along] = -1
        div = np.asarray(scales, np.float64).reshape(shape)
        q = np.clip(np.round(flat.astype(np.float64) / div), -127, 127).astype(np.int8)
    q = q.reshape(w.shape)
    scales = np.asarray(scales, np.float32)
    if axis is None:
        return q, QuantParams(np.float32(scales[0]), np.int8(0))
    return q, QuantParams(scales, np.zeros(scales.shape, np.int8), along)


def fits(w: np.ndarray, axis: int | None, scales: np.ndarray) -> bool:
    """Whether ``scales`` (one per channel along ``axis``) cover ``w`` in [-127, 127] steps."""
    w = np.asarray(w, np.float64)
    if axis is None or len(scales) != w.shape[axis % w.ndim]:
        return False
    moved = np.moveaxis(w, axis % w.ndim, 0).reshape(len(scales), -1)
    return bool((np.abs(moved).max(axis=1, initial=0.0) <= 127.5 * np.asarray(scales, np.float64)).all())


def carried_weight(w: np.ndarray, axis: int | None, grid: WeightGrid,
                   name: str) -> tuple[np.ndarray, QuantParams] | None:
    """An already-quantized model's own int8 weights and scales (``converters.carried``), in the
    layout ``weight`` writes (per channel along ``axis``); a BatchNormalization folded into them
    rescales each channel's scale and keeps the integers. None, with a warning, when ``w`` is
    not on that grid or the grid runs along another axis."""
    w = np.asarray(w, dtype=np.float32)
    axis = None if axis is None else axis % w.ndim
    channels = grid.channels(axis)
    kept = on_grid(w, axis, channels) if channels is not None else None
    if kept is None:
        warn(f"weights '{name}' are requantized: they are no longer on the model's own int8 grid "
             "(scales along another axis, or values changed since)")
        return None
    q, scales = kept
    if axis is None:
        return q, QuantParams(np.float32(scales[0]), np.int8(0))
    return q, QuantParams(scales, np.zeros(scales.shape, np.int8), axis)


def bias(b: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, QuantParams]:
    """int32 bias with scale = input_scale * weight_scale (broadcast to the bias length)."""
    b = np.asarray(b, dtype=np.float64)
    scale = (np.float64(input_scale) * np.asarray(weight_scale, np.float64)).astype(np.float32)
    scale = np.broadcast_to(scale, b.shape) if scale.ndim == 0 or scale.size == 1 else scale
    q = np.clip(np.round(b / scale.astype(np.float64)), INT32.min, INT32.max).astype(np.int32)
    return q, QuantParams(np.ascontiguousarray(scale, np.float32), np.zeros(b.shape, np.int32), 0)
