"""Range observers: turn the values a tensor takes during calibration into one (lo, hi) range.

Each observer is a small class with ``update(values)`` (called once per sample, so memory stays
bounded no matter how many samples there are) and ``range() -> (lo, hi)``. They are listed in
``OBSERVERS``; ``make("percentile:99.9")`` builds one from its registry name and optional argument.

    minmax       the exact observed min and max: covers every value, outliers included
    percentile   clips each tail at a percentile (default 99.99); a side the data never crosses
                 (e.g. the zero side of a ReLU output) keeps its exact bound
    magnitude    one cut at a percentile of |x| (default 99.999) for both sides, so only the
                 longer tail is clipped (onnxruntime's Percentile calibrator)
    entropy      TensorRT-style KL calibration: picks the |x| threshold whose 8-bit histogram
                 loses the least information (2048 bins)
    mse          searches the clip range that minimises the expected quantization MSE
    auto         one histogram per tensor, every method's range from it; ``calibrate.select``
                 then picks per group of tensors by measured output error (the default)

The three clipping observers share ``RunningHistogram``: a signed histogram over [-R, R] whose
radius R doubles (merging bins pairwise, which is exact) when a sample exceeds it, so one pass
over the data suffices. Non-finite values (e.g. -inf attention masks) are ignored: int8 cannot
represent them and they would otherwise make every range infinite.

The ranges are the observed ones; making them contain zero (as the int8 spec needs) is the
quantizer's job.
"""
from __future__ import annotations

import math

import numpy as np

from converters.calibrate import binning
from core.errors import UsageError


def _finite(values: np.ndarray) -> tuple[np.ndarray, float, float]:
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
        _, lo, hi = _finite(values)
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
        flat, lo, hi = _finite(values)
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
        self.counts = _merged_pairs(self.counts)
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


def _merged_pairs(counts: np.ndarray) -> np.ndarray:
    """``counts`` on a grid of twice the radius: bin pairs summed into the middle half."""
    merged = counts.reshape(-1, 2).sum(axis=1)
    quarter = counts.size // 4
    out = np.zeros_like(counts)
    out[quarter:quarter + merged.size] = merged
    return out


def percentile_range(h: RunningHistogram, percentile: float) -> tuple[float, float]:
    """Each tail of ``h`` clipped at ``percentile``; a side the data never crosses keeps its bound."""
    if not h.seen or h.radius == 0.0:
        return MinMax.range(h)
    tail = 1.0 - percentile / 100.0
    lo = h.lo if h.lo >= 0.0 else max(h.lo, min(h.quantile(tail), 0.0))
    hi = h.hi if h.hi <= 0.0 else min(h.hi, max(h.quantile(1.0 - tail), 0.0))
    return h.clamp(lo, hi)


def magnitude_range(h: RunningHistogram, percentile: float) -> tuple[float, float]:
    """One cut T at ``percentile`` of |x|, applied to both sides: (max(min, -T), min(max, T)).

    Unlike ``percentile_range`` it never clips the shorter tail of a two-sided tensor: the
    asymmetric int8 step is set by the whole width, which that tail barely moves, so clipping it
    saves little resolution and loses every value beyond the cut (measured: a pointwise conv
    output of PP-OCRv4's recognizer, [-2.82, 2.67], cut to [-2.81, 2.13]; such cuts on the
    whole backbone cost 1.2 dB at the output, docs/quantization.md). onnxruntime's Percentile
    calibrator cuts this way too."""
    if not h.seen or h.radius == 0.0:
        return MinMax.range(h)
    counts, width = h.abs_counts()
    cdf = np.cumsum(counts) / max(counts.sum(), 1)
    i = min(int(np.searchsorted(cdf, percentile / 100.0, side="left")), counts.size - 1)
    before = cdf[i - 1] if i > 0 else 0.0
    inside = (percentile / 100.0 - before) / max(cdf[i] - before, 1e-300)
    cut = float((i + min(max(inside, 0.0), 1.0)) * width)
    return h.clamp(-cut if h.lo < 0.0 else h.lo, cut if h.hi > 0.0 else h.hi)


class Percentile(RunningHistogram):
    """Clip each tail at ``percentile``; a side the data never crosses keeps its exact bound."""

    def __init__(self, percentile: float = 99.99):
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], got {percentile}",
                             hint="e.g. --observer percentile:99.99")
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        return percentile_range(self, self.percentile)


def kl_threshold(hist: np.ndarray, levels: int, stride: int = 4) -> int:
    """TensorRT-style entropy calibration on a histogram of |x|: return the bin count to keep.

    For each candidate cut ``i``, P is hist[:i] with the clipped tail folded into its last bin,
    and Q is hist[:i] squeezed into ``levels`` quantization levels and expanded back (each
    level's mass spread evenly over the bins that held data). The cut with the smallest KL(P||Q)
    wins. The search is coarse-to-fine (see below) to stay fast in pure NumPy.
    """
    hist = hist.astype(np.float64)
    n = hist.size
    if n <= levels:
        return n
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])   # tail[i] = sum(hist[i:])
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        if i not in scores:
            scores[i] = _kl_at(hist, tail, i, levels)
        return scores[i]

    # Coarse pass every 4*stride bins, then every bin around the best coarse cut: about a third
    # of the work of a uniform stride, and the final cut is exact to one bin.
    coarse = list(range(levels, n, 4 * stride)) + [n]
    best = min(coarse, key=score)
    fine = range(max(levels, best - 4 * stride), min(n, best + 4 * stride) + 1, max(1, stride // 4))
    return min(list(fine) + [best], key=score)


def _kl_at(hist: np.ndarray, tail: np.ndarray, i: int, levels: int) -> float:
    """KL(P||Q) for a cut after ``i`` bins."""
    p = hist[:i].copy()
    p[-1] += tail[i]
    starts = np.linspace(0, i, levels + 1).astype(np.int64)[:-1]
    sums = np.add.reduceat(hist[:i], starts)
    nonzero = np.add.reduceat((hist[:i] > 0).astype(np.float64), starts)
    per_bin = np.divide(sums, nonzero, out=np.zeros_like(sums), where=nonzero > 0)
    sizes = np.diff(np.append(starts, i))
    q = np.repeat(per_bin, sizes) * (hist[:i] > 0)
    return _kl(p, q)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P||Q) of two unnormalised histograms; Q is smoothed where P has mass and Q has none."""
    p = p / p.sum()
    q_sum = q.sum()
    if q_sum <= 0:
        return math.inf
    q = np.where((q == 0) & (p > 0), 1e-4 / p.size, q / q_sum)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


class Magnitude(Percentile):
    """One cut at ``percentile`` of |x| for both sides: the shorter tail keeps its bound."""

    def __init__(self, percentile: float = 99.999):
        super().__init__(percentile)

    def range(self) -> tuple[float, float]:
        return magnitude_range(self, self.percentile)


def entropy_range(h: RunningHistogram, bins: int = 2048) -> tuple[float, float]:
    """TensorRT's KL cut of ``h``'s |x| histogram.

    Two-sided tensors get 128 levels per side (int8 spends one sign bit); one-sided tensors such
    as ReLU outputs are quantized asymmetrically over [0, T], so they get all 255 levels.
    """
    if not h.seen or h.radius == 0.0:
        return MinMax.range(h)
    counts, width = h.abs_counts()
    # Exact zeros are represented exactly whatever the range; left in, a ReLU's spike at 0
    # dominates the KL sum and drives the cut far too low (each candidate is judged mostly
    # on how it smears that one bin). TensorRT's calibrator has the same blind spot.
    counts = counts.copy()
    counts[0] = max(counts[0] - h.exact_zeros, 0)
    amax = max(-h.lo, h.hi)
    hist = _resample(counts, width, amax, bins)
    levels = 255 if h.lo >= 0.0 or h.hi <= 0.0 else 128
    threshold = amax * kl_threshold(hist, levels) / bins
    return h.clamp(-threshold, threshold)


class Entropy(RunningHistogram):
    """KL-divergence calibration (TensorRT's int8 entropy calibrator), 2048 bins of |x|
    (``entropy_range``)."""

    BINS = 2048
    COUNT_ZEROS = True

    def range(self) -> tuple[float, float]:
        return entropy_range(self, self.BINS)


def _resample(counts: np.ndarray, width: float, amax: float, bins: int) -> np.ndarray:
    """Counts over [0, len*width] re-binned to ``bins`` bins over [0, amax] (via the CDF)."""
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    old_edges = np.arange(cum.size) * width
    new_edges = np.linspace(0.0, amax, bins + 1)
    new_cum = np.interp(new_edges, old_edges, cum)
    new_cum[-1] = cum[-1]        # values just above amax (bin rounding) stay in the last bin
    return np.diff(new_cum)


MSE_CANDIDATES = 50


def mse_range(h: RunningHistogram) -> tuple[float, float]:
    """Ranges shrunk from (min, max) by a factor; the one with least expected MSE.

    The expected error of a candidate is the clipping error of the values outside it plus the
    uniform rounding noise scale**2 / 12 of the values inside (255 steps of int8).
    """
    if not h.seen or h.radius == 0.0:
        return MinMax.range(h)
    edges = h.edges()
    centres = (edges[:-1] + edges[1:]) / 2.0
    mask = h.counts > 0
    x, n = centres[mask], h.counts[mask].astype(np.float64)
    lo0, hi0 = min(h.lo, 0.0), max(h.hi, 0.0)
    step = 1.0 / MSE_CANDIDATES
    best = _best_shrink(x, n, lo0, hi0, np.linspace(step, 1.0, MSE_CANDIDATES))
    # refine around the coarse optimum: the error curve is smooth, one more pass suffices
    best = _best_shrink(x, n, lo0, hi0, np.clip(np.linspace(best - step, best + step, 21), step / 10, 1.0))
    return h.clamp(lo0 * best, hi0 * best)


def _best_shrink(x: np.ndarray, n: np.ndarray, lo0: float, hi0: float, alphas: np.ndarray) -> float:
    alphas = alphas[:, None]
    lo, hi = lo0 * alphas, hi0 * alphas
    scale = (hi - lo) / 255.0
    clipped = np.clip(x[None, :], lo, hi)
    inside = (x[None, :] >= lo) & (x[None, :] <= hi)
    err = (n * (x - clipped) ** 2).sum(axis=1) + (n * inside).sum(axis=1) * scale[:, 0] ** 2 / 12
    return float(alphas[int(np.argmin(err)), 0])


class MSE(RunningHistogram):
    """The clip range with the least expected quantization MSE (``mse_range``)."""

    def range(self) -> tuple[float, float]:
        return mse_range(self)


def method_range(h: RunningHistogram, method: str) -> tuple[float, float]:
    """The range ``method`` (a registry name, ``percentile:P`` included) gives on histogram ``h``."""
    name, _, arg = method.partition(":")
    if name == "percentile":
        return percentile_range(h, float(arg) if arg else 99.99)
    if name == "magnitude":
        return magnitude_range(h, float(arg) if arg else 99.999)
    if name == "mse":
        return mse_range(h)
    if name == "entropy":
        return entropy_range(h, Entropy.BINS)
    return MinMax.range(h)


class Auto(RunningHistogram):
    """The histogram every method's range follows from, for ``calibrate.select`` (the ``auto``
    method); alone, its range is min/max.

    It also keeps the samples in ``FOLDS`` folds by arrival order (sample k in fold k % FOLDS),
    each a histogram on the same grid (one bincount serves all): ``heldout_candidates`` gives
    the ranges each fold's samples would get from the *other* samples, so ``select`` scores a
    method the way held-out data meets it. Scored on the samples its ranges came from, min/max
    covers their every outlier exactly, which no unseen input enjoys: that hid percentile's
    held-out gains (the ViT, YOLOv8n) and favoured choices that did not generalise."""

    # Each method costs one scoring run per sample, so only those that won a zoo model on
    # held-out data (docs/quantization.md): percentile:99.999 on DBNet, the ViT and YOLOv8n
    # (+0.4 to +1.3 dB), min/max elsewhere. percentile:99.99 lost up to 3.5 dB (EfficientNet-B0)
    # but won 2 dB more on ddddocr's YOLOX detector and 2.9 on the ViT: it needs a clear win
    # (``select.Z_HARD``); mse never beat percentile:99.999; entropy's KL search costs more than
    # the rest together. magnitude:99.999 is the better fixed cut on 6 of 8 zoo models (PP-OCRv4
    # det +2.5 dB) but is not offered: the held-out scorer ranks it against percentile opposite to
    # holdout.npz on 4 of them, and offered it loses ddddocr's CRNN 1.3 dB and PP-OCR cls 1.9
    # (docs, "Magnitude cut").
    METHODS = ("minmax", "percentile:99.999", "percentile:99.99")
    FOLDS = 2

    @property
    def COUNT_ZEROS(self) -> bool:          # noqa: N802 (the base class's constant, read per instance)
        return any(m.partition(":")[0] == "entropy" for m in self.METHODS)

    def __init__(self, bins: int = 8192):
        super().__init__(bins)
        self.updates = 0
        self.folds = [RunningHistogram(bins) for _ in range(self.FOLDS)]
        self._fold = self.folds[0]

    def update(self, values: np.ndarray) -> None:
        self._fold = fold = self.folds[self.updates % self.FOLDS]
        self.updates += 1
        zeros, pending = self.exact_zeros, self.pending_zeros
        super().update(values)
        fold.exact_zeros += self.exact_zeros - zeros
        fold.pending_zeros += self.pending_zeros - pending

    def _extend(self, lo: float, hi: float) -> None:
        super()._extend(lo, hi)
        self._fold._extend(lo, hi)

    def _add(self, binned: np.ndarray) -> None:
        super()._add(binned)
        self._fold.counts += binned

    def _add_pending(self) -> None:
        super()._add_pending()
        for fold in self.folds:
            fold.counts[self.bins // 2] += fold.pending_zeros

    def _double(self) -> None:
        super()._double()
        for fold in self.folds:
            fold.counts = _merged_pairs(fold.counts)

    def candidates(self) -> dict[str, tuple[float, float]]:
        """The range of each method of ``METHODS`` on this histogram."""
        return {method: method_range(self, method) for method in self.METHODS}

    def heldout_candidates(self) -> dict[str, tuple[tuple[float, float], ...]]:
        """Per method, one range per fold k: the method's range on the samples outside fold k
        (``FOLDS`` = 2: the other fold). A fold without values gets the full range."""
        full = self.candidates()
        per_fold = []
        for fold in self.folds:
            fold.radius = self.radius
            per_fold.append({m: method_range(fold, m) for m in self.METHODS} if fold.seen else full)
        return {m: tuple(per_fold[(k + 1) % self.FOLDS][m] for k in range(self.FOLDS)) for m in self.METHODS}


# The registry: name -> (class, type of its optional ":argument").
OBSERVERS: dict[str, tuple[type, type | None]] = {
    "auto": (Auto, None),
    "minmax": (MinMax, None),
    "percentile": (Percentile, float),
    "magnitude": (Magnitude, float),
    "entropy": (Entropy, None),
    "mse": (MSE, None),
}


def make(method: str):
    """Build an observer from ``name`` or ``name:argument`` (e.g. ``percentile:99.9``)."""
    name, _, arg = str(method).partition(":")
    if name not in OBSERVERS:
        raise UsageError(f"unknown calibration method {method!r}",
                         hint=f"choose one of: {', '.join(OBSERVERS)} (percentile takes :P, e.g. percentile:99.9)")
    cls, arg_type = OBSERVERS[name]
    if not arg:
        return cls()
    if arg_type is None:
        raise UsageError(f"calibration method {name!r} takes no argument (got {method!r})")
    try:
        value = arg_type(arg)
    except ValueError:
        raise UsageError(f"bad argument {arg!r} for calibration method {name!r}") from None
    return cls(value)
