"""The running histogram every clipping observer reads, and the exact min/max it extends.

``RunningHistogram`` is a signed histogram over [-R, R] whose radius R doubles (merging bins
pairwise, which is exact) when a sample exceeds it, so one pass over the data suffices; large
updates are binned from a strided subset with exact tails (``binning.py``), and every update in
cache-sized chunks. Non-finite values (e.g. -inf attention masks) are ignored: int8 cannot
represent them and they would otherwise make every range infinite. The range methods that read
it (percentile, magnitude, entropy, mse) and the observer registry are in ``observers.py``.
"""
from __future__ import annotations

import math

import numpy as np

from converters.calibrate import binning


def finite(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(flattened values, min, max) with NaN/Inf dropped; one min and one max pass when all finite."""
    flat = np.asarray(values).reshape(-1)
    if not flat.size:
        return flat, math.inf, -math.inf
    lo, hi = float(flat.min()), float(flat.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):       # NaN or Inf somewhere
        flat = flat[np.isfinite(flat)]
        if not flat.size:
            return flat, math.inf, -math.inf
        lo, hi = float(flat.min()), float(flat.max())
    return flat, lo, hi


class MinMax:
    """Running exact min and max."""

    def __init__(self):
        self.lo = math.inf
        self.hi = -math.inf

    def update(self, values: np.ndarray) -> None:
        _, lo, hi = finite(values)
        self._extend(lo, hi)

    def _extend(self, lo: float, hi: float) -> None:
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    @property
    def seen(self) -> bool:
        return self.lo <= self.hi

    def range(self) -> tuple[float, float]:
        return (self.lo, self.hi) if self.seen else (0.0, 0.0)


class RunningHistogram(MinMax):
    """A signed histogram over [-radius, radius] that grows by doubling its radius.

    Doubling merges adjacent bin pairs into the middle half of the new bin array, so no count is
    ever interpolated. The radius ends within (amax, 2*amax], so at least a quarter of the bins
    cover the data: 8192 bins keep >= 2048 bins on the busy side, the resolution TensorRT's
    entropy calibrator uses.
    """

    MIN_RADIUS = 1e-30
    # Whether ``exact_zeros`` is counted: only the entropy range reads it, and counting is a full
    # pass over the values (a sixth of an update on a 640x640 detector).
    COUNT_ZEROS = False
    # Values binned per update in the bulk at most once ``FULL_UPDATES`` updates binned all of
    # theirs (``binning.py``: the tails stay exact; a few samples still count every value).
    BIN_LIMIT = 1 << 17
    FULL_UPDATES = 8
    # Values binned at once: the positions (float32) and their indices (int64) of a chunk stay in
    # the cache, and a large tensor's whole-size temporaries (12 bytes a value) are never made.
    CHUNK = 1 << 16

    def __init__(self, bins: int = 8192):
        super().__init__()
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.radius = 0.0
        self.pending_zeros = 0      # all-zero samples seen before any non-zero value set a radius
        self.exact_zeros = 0        # values exactly 0 (ReLU floors, padding): int8 keeps them exact
        self.calls = 0              # updates with values (``binning.sampled_counts``' offset)

    def update(self, values: np.ndarray) -> None:
        flat, lo, hi = finite(values)
        if not flat.size:
            return
        if self.COUNT_ZEROS:
            self.exact_zeros += flat.size - int(np.count_nonzero(flat))
        self._extend(lo, hi)
        amax = max(-lo, hi)
        if self.radius == 0.0:
            if amax == 0.0:
                self.pending_zeros += flat.size
                return
            # a floor keeps bins/(2*radius) finite in float32 for denormal-only data
            self.radius = max(amax, self.MIN_RADIUS)
            self._add_pending()
        while amax > self.radius:
            self._double()
        if self.calls >= self.FULL_UPDATES and flat.size > 2 * self.BIN_LIMIT:
            self._add(binning.sampled_counts(self, flat, self.BIN_LIMIT, self.calls))
        else:
            self._add(self.binned(flat))
        self.calls += 1

    def binned(self, flat: np.ndarray) -> np.ndarray:
        """Counts of ``flat`` (finite, |x| <= radius) per bin, ``CHUNK`` values at a time
        (``_bin_chunk``): 25% less CPU than whole-tensor temporaries on PP-OCRv6 det's pass, and
        a 13 MB activation no longer makes 39 MB of them (bench/convert_speed_bench.py)."""
        if flat.size <= self.CHUNK:
            return _bin_chunk(flat, self.radius, self.bins)
        counts = np.zeros(self.bins, np.int64)
        for k in range(0, flat.size, self.CHUNK):
            counts += _bin_chunk(flat[k:k + self.CHUNK], self.radius, self.bins)
        return counts

    def _add(self, binned: np.ndarray) -> None:
        self.counts += binned

    def _add_pending(self) -> None:
        self.counts[self.bins // 2] += self.pending_zeros

    def clamp(self, lo: float, hi: float) -> tuple[float, float]:
        """A clipped range kept inside the observed one and ordered. Histogram estimates are
        only bin-accurate, so e.g. a quantile of one-valued data can land just below its min."""
        lo = min(max(lo, self.lo), self.hi)
        return lo, min(max(hi, lo), self.hi)

    def _double(self) -> None:
        self.counts = merged_pairs(self.counts)
        self.radius *= 2.0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.pending_zeros

    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, self.bins + 1)

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the samples lie (linear inside a bin)."""
        if self.radius == 0.0:
            return 0.0
        cdf = np.cumsum(self.counts) / self.counts.sum()
        i = int(np.searchsorted(cdf, q, side="left"))
        i = min(i, self.bins - 1)
        before = cdf[i - 1] if i > 0 else 0.0
        inside = (q - before) / max(cdf[i] - before, 1e-300)
        edges = self.edges()
        return float(edges[i] + min(max(inside, 0.0), 1.0) * (edges[i + 1] - edges[i]))

    def abs_counts(self) -> tuple[np.ndarray, float]:
        """Histogram of |x| over [0, radius] (bins/2 bins) and its bin width."""
        half = self.bins // 2
        return self.counts[half:] + self.counts[:half][::-1], self.radius / half


def _bin_chunk(flat: np.ndarray, radius: float, bins: int) -> np.ndarray:
    """Counts of ``flat`` (finite, |x| <= radius) per bin of ``bins`` over [-radius, radius].

    float32 arithmetic is 3x faster than float64 here; it can move a value sitting on a bin
    edge to the neighbouring bin (~3 in 10^4), far below what any observer can notice. No
    clip pass: |x| <= radius puts x * scale + bins/2 within float32 rounding of [0, bins],
    which truncates to 0..bins, so only the top edge (x == radius) needs folding into the
    last bin; the same counts as clipping to [0, bins - 1] first, one pass fewer."""
    scale = bins / (2.0 * radius)
    pos = np.multiply(flat, np.float32(scale), dtype=np.float32)
    pos += np.float32(radius * scale)
    try:
        binned = np.bincount(pos.astype(np.intp), minlength=bins + 1)
    except ValueError:                   # a negative position: not reachable by the bound above
        binned = None
    if binned is None or binned.size > bins + 1:
        np.clip(pos, 0, bins - 1, out=pos)
        return np.bincount(pos.astype(np.intp), minlength=bins)
    binned[bins - 1] += binned[bins]
    return binned[:bins]


def merged_pairs(counts: np.ndarray) -> np.ndarray:
    """``counts`` on a grid of twice the radius: bin pairs summed into the middle half."""
    merged = counts.reshape(-1, 2).sum(axis=1)
    quarter = counts.size // 4
    out = np.zeros_like(counts)
    out[quarter:quarter + merged.size] = merged
    return out
