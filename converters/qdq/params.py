"""Quantization parameters for the QDQ writer: activations, weights (per channel) and bias.

Conventions (ONNX QuantizeLinear/DequantizeLinear, int8):

    activation  per tensor; asymmetric (scale = (hi-lo)/255, int8 or uint8 zero point) or
                symmetric int8 (zero point 0, scale = amax/127) -- TensorRT accepts only the latter
    weight      per output channel, symmetric, values in [-127, 127] (zero point 0): the TFLite
                int8 spec and TensorRT both exclude -128 so that negation stays representable
    bias        int32, zero point 0, scale = input scale * weight scale (per channel)

Every range is first widened to contain 0, so that 0 (padding, ReLU's floor) is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.carried import WeightGrid, on_grid, warn

# A tensor whose range is a single point (e.g. all zeros) still needs a positive scale.
MIN_SCALE = 1e-8
INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray            # float32, scalar or [channels]
    zero_point: np.ndarray       # int8 (activations, weights) or int32 (bias), same shape
    axis: int | None = None      # the channel axis of a per-channel tensor

    def to_dict(self) -> dict:
        return {"scale": np.asarray(self.scale).tolist(), "zero_point": np.asarray(self.zero_point).tolist(),
                "axis": self.axis}


def activation(lo: float, hi: float, *, symmetric: bool, dtype: str = "int8") -> QuantParams:
    """Per-tensor parameters for an observed range (lo, hi); ``dtype`` int8 or uint8."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        if dtype != "int8":
            raise ValueError("symmetric activations are int8")
        scale = max(max(-lo, hi) / 127.0, MIN_SCALE)
        return QuantParams(np.float32(scale), np.int8(0))
    info = np.iinfo(dtype)
    scale = max((hi - lo) / 255.0, MIN_SCALE)
    zero_point = int(np.clip(np.round(info.min - lo / scale), info.min, info.max))
    return QuantParams(np.float32(scale), np.dtype(dtype).type(zero_point))


def weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, QuantParams]:
    """Symmetric int8 weights, per channel along ``axis`` (None: per tensor)."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.float32(np.abs(w).max()) if w.size else np.float32(0)
        scale = np.float32(max(float(amax) / 127.0, MIN_SCALE))
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return q, QuantParams(scale, np.int8(0))
    axis = axis % w.ndim
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if w.size else np.zeros(w.shape[axis], np.float32)
    scale = np.maximum(amax / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, QuantParams(scale, np.zeros(scale.shape, np.int8), axis)


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
