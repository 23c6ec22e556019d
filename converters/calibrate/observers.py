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

The clipping observers share ``RunningHistogram`` (``histogram.py``): a signed histogram over
[-R, R] whose radius R doubles (merging bins pairwise, which is exact) when a sample exceeds it,
so one pass over the data suffices. Non-finite values (e.g. -inf attention masks) are ignored: int8 cannot
represent them and they would otherwise make every range infinite.

The ranges are the observed ones; making them contain zero (as the int8 spec needs) is the
quantizer's job.
"""
from __future__ import annotations

import math

import numpy as np

from converters.calibrate.histogram import MinMax, RunningHistogram, merged_pairs
from core.errors import UsageError


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
            fold.counts = merged_pairs(fold.counts)

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
