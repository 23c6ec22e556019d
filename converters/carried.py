"""The int8 parameters an already-quantized ONNX model carries, as the backends consume them.

``converters.frontend.quantized`` reads a QDQ / QOperator / dynamically quantized model into a
float graph plus one ``Carried``; the conversion then runs the normal int8 pipeline with:

    ranges()        activation ranges (by float tensor name) that give back the model's own
                    scale and zero point exactly: (lo, hi) = ((-128 - zp) * s, (127 - zp) * s)
                    in the int8 domain, where a uint8 zero point z becomes z - 128
    weights         float initializer name -> WeightGrid: the scales the model stored its int8
                    weights with (QDQ backend; the TFLite backend takes them by node: node_weights)
    node_weights    ONNX node name -> scales of its output channels (TFLite backend)
    float_nodes     nodes the model itself runs in float (mixed graphs): kept float
    unannotated     tensors its int8 nodes need that carry no parameters and no tie fills:
                    calibration data measures them, else the conversion names them in one error

Pure numpy, no onnx: the backends import ``on_grid`` to reuse a model's integer weights. A weight
keeps its int8 values only while its float value is still exactly ``q * scale`` with |q| <= 127
(a folded BatchNormalization or a split grouped convolution moves it off the grid: then it is
requantized and ``CarriedScaleWarning`` says so).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
GRID_TOL = 1e-3            # |w/s - round(w/s)|: float32 storage of q*s is off by ~1e-7 of q


class CarriedScaleWarning(UserWarning):
    """A scale or integer value the model carries could not be kept as it is (says why)."""


@dataclass(frozen=True)
class ActParams:
    scale: float              # float32 value, as the model stores it
    zero_point: int           # in the int8 domain (a uint8 zero point minus 128)
    dtype: str                # the model's own type: "uint8", "int8", "int16", ...

    def range(self) -> tuple[float, float]:
        """The int8 range whose ``activation_params`` are exactly (scale, zero_point)."""
        s = float(np.float32(self.scale))
        return ((INT8_MIN - self.zero_point) * s, (INT8_MAX - self.zero_point) * s)

    @classmethod
    def from_model(cls, scale: float, zero_point: int, dtype: str) -> "ActParams":
        """Map a (scale, zero point) of any integer type to the int8 TFLite domain."""
        info = np.iinfo(dtype)
        s = float(np.float32(scale))
        if info.bits == 8:
            return cls(s, int(zero_point) - (info.min - INT8_MIN), dtype)
        # wider types: keep the real range they cover, on 256 levels (requantized; noted by the reader)
        lo, hi = (info.min - zero_point) * s, (info.max - zero_point) * s
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s8 = float(np.float32((hi - lo) / 255.0))
        return cls(s8, int(np.clip(np.round(INT8_MIN - lo / s8), INT8_MIN, INT8_MAX)), dtype)


@dataclass(frozen=True)
class WeightGrid:
    scales: np.ndarray        # float32, one per channel along ``axis`` (or one for the tensor)
    axis: int | None          # None: per tensor


@dataclass
class Carried:
    form: str                                          # "qdq", "qoperator", "dynamic" ("+"-joined)
    activations: dict[str, ActParams] = field(default_factory=dict)
    weights: dict[str, WeightGrid] = field(default_factory=dict)
    node_weights: dict[str, np.ndarray] = field(default_factory=dict)
    float_nodes: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    unannotated: tuple[str, ...] = ()                  # tensors int8 nodes need, the model leaves bare

    @property
    def static(self) -> bool:
        """The model stores activation parameters (QDQ / QOperator); else only its weights are
        quantized, and its activations at run time (``quantize_dynamic``) or never."""
        return bool({"qdq", "qoperator"} & set(self.form.split("+")))

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: p.range() for name, p in self.activations.items()}

    def summary(self) -> dict:
        """What the manifest records about the model's own quantization."""
        return {"form": self.form, "activations": len(self.activations), "weights": len(self.weights),
                "float_nodes": sorted(self.float_nodes), "notes": list(self.notes)}


def on_grid(w: np.ndarray, axis: int | None, scales) -> np.ndarray | None:
    """int8 values q with w == q * scales (per channel along ``axis``); else None. A -128 (allowed
    by ONNX, not by TFLite's weight range [-127, 127]) becomes -127, as the reader noted."""
    scales = np.asarray(scales, np.float64).reshape(-1)
    w = np.asarray(w, np.float64)
    if np.any(scales <= 0) or not np.all(np.isfinite(scales)):
        return None
    if scales.size > 1:
        if axis is None or w.ndim == 0 or w.shape[axis] != scales.size:
            return None
        shape = [1] * w.ndim
        shape[axis] = -1
        scales = scales.reshape(shape)
    q = w / scales
    r = np.round(q)
    if not np.all(np.abs(q - r) <= GRID_TOL) or np.any(r > INT8_MAX) or np.any(r < INT8_MIN):
        return None
    return np.maximum(r, -INT8_MAX).astype(np.int8)


def channel_scales(scales, channels: int) -> np.ndarray | None:
    """``scales`` as one float32 per channel (a per-tensor scale repeats); None if it cannot be."""
    s = np.asarray(scales, np.float32).reshape(-1)
    if s.size == 1:
        return np.full(channels, s[0], np.float32)
    return s if s.size == channels else None


def warn(message: str) -> None:
    warnings.warn(message, CarriedScaleWarning, stacklevel=3)
