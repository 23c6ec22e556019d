"""The int8 parameters an already-quantized ONNX model carries, as the backends consume them.

``converters.frontend.quantized`` reads a QDQ / QOperator / dynamically quantized model into a
float graph plus one ``Carried``; the conversion then runs the normal int8 pipeline with:

    ranges()        activation ranges (by float tensor name) that give back the model's own
                    scale and zero point exactly: (lo, hi) = ((-128 - zp) * s, (127 - zp) * s)
                    in the int8 domain, where a uint8 zero point z becomes z - 128
    weights         float initializer name -> WeightGrid: the scales the model stored its int8
                    weights with (QDQ backend; the TFLite backend takes them by node: node_weights)
    node_weights    ONNX node name -> ChannelGrid of its output channels (TFLite backend)
    float_nodes     nodes the model itself runs in float (mixed graphs): kept float
    unannotated     tensors its int8 nodes need that carry no parameters and no tie fills:
                    calibration data measures them, else the conversion names them in one error

Pure numpy, no onnx: the backends import ``on_grid`` to reuse a model's integer weights. A weight
keeps its int8 values while its float value is still ``q * scale`` per channel, or ``q * scale * k``
(a BatchNormalization folded in: the channel's scale becomes ``scale * |k|``), also one group of a
grouped convolution at a time; anything else is requantized and ``CarriedScaleWarning`` says so.
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
class ChannelGrid:
    """A weight's grid per output channel: its scales and the largest |q| of each channel."""
    scales: np.ndarray        # float32 [C]
    qmax: np.ndarray          # int [C]


@dataclass(frozen=True)
class WeightGrid:
    """What a DequantizeLinear of a symmetric int8 initializer says (ONNX layout)."""
    scales: np.ndarray        # float32, one per channel along ``axis`` (or one for the tensor)
    axis: int | None          # None: per tensor
    q: np.ndarray             # the int8 values

    def channels(self, axis: int | None) -> ChannelGrid | None:
        """The grid per channel along ``axis`` (None: one for the whole tensor); None when the
        model's scales run along another axis."""
        if axis is None:
            if self.scales.size != 1:
                return None
            return ChannelGrid(self.scales.reshape(1), np.array([np.abs(self.q.astype(np.int16)).max(initial=0)]))
        axis = axis % self.q.ndim
        if self.scales.size > 1 and self.axis != axis:
            return None
        count = self.q.shape[axis]
        scales = self.scales if self.scales.size > 1 else np.full(count, self.scales[0], np.float32)
        qmax = np.abs(np.moveaxis(self.q.astype(np.int16), axis, 0).reshape(count, -1)).max(axis=1)
        return ChannelGrid(scales.astype(np.float32), qmax)


@dataclass
class Carried:
    form: str                                          # "qdq", "qoperator", "dynamic" ("+"-joined)
    activations: dict[str, ActParams] = field(default_factory=dict)
    weights: dict[str, WeightGrid] = field(default_factory=dict)
    node_weights: dict[str, ChannelGrid] = field(default_factory=dict)
    float_nodes: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    unannotated: tuple[str, ...] = ()                  # tensors int8 nodes need, the model leaves bare
    split_gemms: tuple[tuple[str, str], ...] = ()      # (MatMul, Add) node pairs the quantizer split from a Gemm

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


def on_grid(w: np.ndarray, axis: int | None, grid: ChannelGrid) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 q, float32 scales) with w == q * scales per channel along ``axis``, or None.

    First on the model's own scales. Else each channel may have been multiplied by one factor
    since (a BatchNormalization folded into the layer: w = q * s * k): then its largest value is
    qmax * s * |k|, which gives the channel's new scale, and the model's integers (sign-flipped
    where k < 0) come back exactly. A -128 (allowed by ONNX, not by TFLite's weight range
    [-127, 127]) becomes -127, as the reader noted."""
    scales = np.asarray(grid.scales, np.float64).reshape(-1)
    w = np.asarray(w, np.float64)
    if np.any(scales <= 0) or not np.all(np.isfinite(scales)):
        return None
    groups = scales.size // w.shape[axis] if axis is not None and w.ndim and w.shape[axis] else 0
    if groups > 1 and groups * w.shape[axis] == scales.size:
        return _one_group(w, axis, grid)
    if scales.size > 1 and (axis is None or w.ndim == 0 or w.shape[axis] != scales.size):
        return None
    moved = np.moveaxis(w, axis, 0).reshape(scales.size, -1) if axis is not None else w.reshape(1, -1)
    for candidate in (scales, _rescaled(moved, scales, grid.qmax)):
        if candidate is None:
            continue
        q = moved / candidate[:, None]
        r = np.round(q)
        if np.all(np.abs(q - r) <= GRID_TOL) and np.all(r <= INT8_MAX) and np.all(r >= INT8_MIN):
            r = np.maximum(r, -INT8_MAX).astype(np.int8)
            shape = list(np.moveaxis(w, axis, 0).shape) if axis is not None else list(w.shape)
            q8 = np.moveaxis(r.reshape(shape), 0, axis) if axis is not None else r.reshape(shape)
            return np.ascontiguousarray(q8), candidate.astype(np.float32)
    return None


def _one_group(w: np.ndarray, axis: int, grid: ChannelGrid):
    """A grouped convolution runs as one CONV_2D per group (lower/conv.py): its weights are one
    contiguous slice of the model's output channels; the slice whose grid fits is the group."""
    n = w.shape[axis]
    for start in range(0, grid.scales.size, n):
        part = ChannelGrid(np.asarray(grid.scales)[start:start + n], np.asarray(grid.qmax)[start:start + n])
        kept = on_grid(w, axis, part)
        if kept is not None:
            return kept
    return None


def _rescaled(moved: np.ndarray, scales: np.ndarray, qmax) -> np.ndarray | None:
    """Per-channel scales s * |k| from each channel's largest |w| / (s * qmax) (see on_grid)."""
    qmax = np.asarray(qmax, np.float64).reshape(-1)
    if qmax.size != scales.size:
        return None
    amax = np.abs(moved).max(axis=1, initial=0.0)
    factor = np.where((qmax > 0) & (amax > 0), amax / np.maximum(qmax * scales, 1e-300), 1.0)
    return scales * factor


def warn(message: str) -> None:
    warnings.warn(message, CarriedScaleWarning, stacklevel=3)
