"""Fidelity metrics between a reference (float) output and a candidate (quantized) output.

    sqnr_db         10 log10(sum ref^2 / sum (ref - cand)^2): signal-to-quantization-noise in dB;
                    every 6 dB is about one bit. ``sqnr_db(reference, candidate)`` is the one
                    definition (verify, the benches and the tests all use it); edge cases:
                      identical outputs (no noise, zeros included)   +SQNR_CAP
                      zero reference, some noise                      -SQNR_CAP
                      NaN/Inf in either (no meaningful ratio)         -SQNR_CAP
                      anything else                                   clamped to [-SQNR_CAP, SQNR_CAP]
    cosine          cosine similarity of the flattened outputs (1 = same direction)
    max_abs         the largest absolute difference
    mean_abs        the mean absolute difference
    top1_agreement  fraction of argmaxes that agree: over the last axis ([N, classes]), or over
                    the channel axis of [N, C, H, W] outputs (per pixel, segmentation maps);
                    None when that axis has a single element
    accuracy        top-1 accuracy against labels (in verify reports, for both models)

``Accumulator`` streams: a verify run adds one sample at a time, so a holdout set of any size
costs the memory of one sample. ``metrics(reference, candidate)`` is the one-shot form.
"""
from __future__ import annotations

import math

import numpy as np

from converters.errors import ConvertError

SQNR_CAP = 200.0      # dB; float64 rounding noise sits far below the 8-bit noise we measure


class VerifyInputError(ConvertError):
    """The candidate's inputs, outputs or labels cannot be matched to the reference's."""
    code = "verify.mismatch"


def sqnr_db(reference, candidate) -> float:
    """SQNR of ``candidate`` against ``reference`` in dB, sums in float64 (see module doc for the
    edge cases). Arrays of the same size; a different shape of the same size is reshaped."""
    ref, cand = _pair(reference, candidate)
    with np.errstate(invalid="ignore", over="ignore"):     # NaN/Inf are decided below, not warned
        err = ref - cand
        return sqnr_from_powers(float(np.sum(ref * ref)), float(np.sum(err * err)))


def sqnr_from_powers(signal_power: float, noise_power: float) -> float:
    """The SQNR in dB of summed powers (sum ref^2, sum err^2): where the edge cases are decided."""
    if not (math.isfinite(signal_power) and math.isfinite(noise_power)):
        return -SQNR_CAP
    if noise_power <= 0.0:
        return SQNR_CAP
    if signal_power <= 0.0:
        return -SQNR_CAP
    return float(min(SQNR_CAP, max(-SQNR_CAP, 10.0 * math.log10(signal_power / noise_power))))


def _pair(reference, candidate) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 arrays of the reference's shape; different sizes are a VerifyInputError."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        if ref.size != cand.size:
            raise VerifyInputError(f"shapes differ: reference {list(ref.shape)}, candidate {list(cand.shape)}",
                                   hint="compare outputs of the same model and sample")
        cand = cand.reshape(ref.shape)
    return ref, cand


AUTO = "auto"


class Accumulator:
    """Running sums for one output (or one intermediate tensor) over many samples.

    ``class_axis``: the axis top-1 is taken over, None for no top-1, or AUTO (``class_axis(shape)``,
    the shape rule; verify decides per output from the graph instead: verify/classes.py)."""

    def __init__(self, class_axis: int | None | str = AUTO):
        self.class_axis = class_axis
        self.signal = self.noise = self.dot = self.cand_norm = 0.0   # signal: sum ref^2 (also its norm)
        self.abs_sum = self.max_abs = 0.0
        self.count = 0
        self.top1_hits = self.top1_total = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref, cand = _pair(reference, candidate)
        err = ref - cand
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum(err * err))
        self.dot += float(np.sum(ref * cand))
        self.cand_norm += float(np.sum(cand * cand))
        if err.size:
            abs_err = np.abs(err)
            self.abs_sum += float(np.sum(abs_err))
            self.max_abs = max(self.max_abs, float(np.max(abs_err)))
        self.count += err.size
        axis = class_axis(ref.shape) if self.class_axis == AUTO else self.class_axis
        if axis is not None and ref.ndim and not -ref.ndim <= axis < ref.ndim:
            raise VerifyInputError(f"class axis {axis} is out of range for an output of shape {list(ref.shape)}",
                                   hint="name an axis the output has with --class-axis")
        if axis is not None and ref.ndim:
            hits = np.argmax(ref, axis=axis) == np.argmax(cand, axis=axis)
            self.top1_hits += int(np.sum(hits))
            self.top1_total += int(hits.size)

    @property
    def sqnr_db(self) -> float:
        return sqnr_from_powers(self.signal, self.noise)

    @property
    def nsr(self) -> float:
        """Noise-to-signal power ratio (linear): what a layer's added error is measured in."""
        if self.signal <= 0.0:
            return 0.0 if self.noise <= 0.0 else math.inf
        return self.noise / self.signal

    def result(self) -> dict:
        denom = math.sqrt(self.signal * self.cand_norm)
        if denom > 0:
            cosine = self.dot / denom
        else:
            cosine = 1.0 if self.signal == self.cand_norm else 0.0
        return {
            "sqnr_db": round(self.sqnr_db, 3),
            "cosine": round(float(cosine), 6),
            "max_abs": float(self.max_abs),
            "mean_abs": float(self.abs_sum / self.count) if self.count else 0.0,
            "top1_agreement": (round(self.top1_hits / self.top1_total, 6) if self.top1_total else None),
        }


def class_axis(shape: tuple) -> int | None:
    """The axis top-1 is taken over: channels (axis 1) of an ONNX [N, C, H, W...] output such as
    a segmentation map, else the last axis ([N, classes], [N, T, vocab]); None for one class."""
    axis = 1 if len(shape) >= 4 else len(shape) - 1
    if axis < 0 or shape[axis] <= 1:
        return None
    return axis


def metrics(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """sqnr_db, cosine, max_abs, mean_abs, top1_agreement of two arrays (same size)."""
    acc = Accumulator()
    acc.add(reference, candidate)
    return acc.result()


def accuracy(logits: list[np.ndarray] | np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy: argmax over the last axis of each sample's output against its label."""
    predictions = np.array([int(np.argmax(np.asarray(x).reshape(-1))) for x in logits])
    labels = np.asarray(labels).reshape(-1)
    if predictions.size != labels.size:
        raise VerifyInputError(f"{predictions.size} predictions for {labels.size} labels",
                               hint="labels must align one to one with the samples")
    return float(np.mean(predictions == labels)) if labels.size else 0.0
