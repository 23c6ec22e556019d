"""Strided binning of large updates (calibrate/binning.py): exact tails, unbiased bulk, fewer values binned."""
from __future__ import annotations

import numpy as np
import pytest

from converters.calibrate import binning, observers
from converters.calibrate.observers import RunningHistogram


class _Counting(RunningHistogram):
    """Counts the values handed to ``binned``."""
    binned_values = 0

    def binned(self, flat):
        type(self).binned_values += flat.size
        return super().binned(flat)


def _samples(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Conv-output-like samples: a Laplacian bulk, a long negative tail, a row-periodic pattern."""
    rng = np.random.default_rng(seed)
    rows = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), size // 64)
    return [(rng.laplace(0.0, 1.0, size).astype(np.float32) - rng.exponential(0.2, size).astype(np.float32) ** 3
             + rows) for _ in range(n)]


def _fill(cls, chunks, limit):
    h = cls()
    h.BIN_LIMIT = limit
    for chunk in chunks:
        h.update(chunk)
    return h


def test_large_updates_bin_a_subset_after_the_first_ones():
    chunks = _samples(20, 1 << 16)
    _Counting.binned_values = 0
    h = _fill(_Counting, chunks, 1 << 12)
    full = RunningHistogram.FULL_UPDATES * (1 << 16)
    # the first FULL_UPDATES samples whole, then ~1/17 of each plus its tails
    assert _Counting.binned_values < full + 12 * (1 << 16) // 8
    assert (h.lo, h.hi) == (min(c.min() for c in chunks), max(c.max() for c in chunks))   # exact


def test_tail_bins_are_exact_and_the_bulk_unbiased():
    chunks = _samples(24, 1 << 16)
    sampled = _fill(RunningHistogram, chunks, 1 << 12)
    exact = _fill(RunningHistogram, chunks, 1 << 30)
    assert sampled.radius == exact.radius
    # the tails each update bins exactly (its 0.1% so far) cover at least the 0.05% of the end
    cdf = np.cumsum(exact.counts) / exact.total
    first, last = np.searchsorted(cdf, 5e-4), np.searchsorted(cdf, 1 - 5e-4) + 1
    np.testing.assert_array_equal(sampled.counts[:first], exact.counts[:first])
    np.testing.assert_array_equal(sampled.counts[last:], exact.counts[last:])
    assert first > 100 and last < sampled.bins - 100
    assert sampled.total == pytest.approx(exact.total, rel=1e-3)


@pytest.mark.parametrize("method", ["percentile:99.999", "percentile:99.99", "magnitude:99.999", "mse"])
def test_clipping_ranges_match_binning_everything(method):
    chunks = _samples(24, 1 << 16, seed=1)
    ranges = []
    for limit in (1 << 12, 1 << 30):
        h = _fill(observers.Auto, chunks, limit)
        ranges.append(observers.method_range(h, method))
    assert ranges[0] == pytest.approx(ranges[1], rel=2e-3, abs=1e-3)


def test_auto_folds_still_partition_the_histogram():
    auto = _fill(observers.Auto, _samples(12, 1 << 15, seed=2), 1 << 11)
    np.testing.assert_array_equal(auto.folds[0].counts + auto.folds[1].counts, auto.counts)


@pytest.mark.parametrize("n, prime", [(1, 1), (2, 2), (4, 5), (8, 11), (17, 17), (90, 97)])
def test_strides_are_prime(n, prime):
    assert binning.prime_at_least(n) == prime
