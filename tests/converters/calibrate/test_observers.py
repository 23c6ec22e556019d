"""Observers on synthetic distributions, checked with a real int8 fake-quantizer."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.calibrate import observers
from converters.calibrate.observers import OBSERVERS, RunningHistogram, make
from core.errors import UsageError


def fake_quant(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Asymmetric int8 as the TFLite spec does it: the range is widened to contain 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    zero_point = np.round(-128 - lo / scale)
    q = np.clip(np.round(x / scale) + zero_point, -128, 127)
    return (q - zero_point) * scale


def quant_mse(x, rng):
    return float(np.mean((fake_quant(x, *rng) - x) ** 2))


def observe(method: str, chunks) -> tuple[float, float]:
    obs = make(method)
    for chunk in chunks:
        obs.update(chunk)
    return obs.range()


@pytest.fixture(scope="module")
def laplace_with_outliers():
    rng = np.random.default_rng(0)
    bulk = rng.laplace(0.0, 1.0, size=200_000).astype(np.float32)
    outliers = np.array([60.0, -45.0, 80.0] * 4, np.float32)
    data = np.concatenate([bulk, outliers])
    rng.shuffle(data)
    return bulk, outliers, np.array_split(data, 20)    # 20 "samples", fed one at a time


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_clipping_observers_beat_minmax_on_the_bulk(method, laplace_with_outliers):
    bulk, _, chunks = laplace_with_outliers
    full = observe("minmax", chunks)
    clipped = observe(method, chunks)
    assert quant_mse(bulk, clipped) < 0.5 * quant_mse(bulk, full), (method, clipped, full)
    assert clipped[1] - clipped[0] < 0.5 * (full[1] - full[0])


def test_mse_has_the_least_total_error_of_all_observers(laplace_with_outliers):
    # MSE optimises squared error over *all* values, so a few huge outliers pull it wide (they
    # dominate the sum); it still clips some and beats every other observer on its own metric.
    bulk, outliers, chunks = laplace_with_outliers
    data = np.concatenate(chunks)
    errors = {m: quant_mse(data, observe(m, chunks)) for m in OBSERVERS}
    assert min(errors, key=errors.get) == "mse", errors
    assert observe("mse", chunks)[1] < observe("minmax", chunks)[1]


def test_mse_clips_a_plain_laplacian_tail():
    bulk = np.random.default_rng(5).laplace(0.0, 1.0, size=200_000).astype(np.float32)
    chunks = np.array_split(bulk, 10)
    full, best = observe("minmax", chunks), observe("mse", chunks)
    assert best[1] - best[0] < 0.9 * (full[1] - full[0])
    assert quant_mse(bulk, best) < 0.9 * quant_mse(bulk, full)


def test_minmax_covers_every_value(laplace_with_outliers):
    bulk, outliers, chunks = laplace_with_outliers
    lo, hi = observe("minmax", chunks)
    assert (lo, hi) == (-45.0, 80.0)
    everything = np.concatenate([bulk, outliers])
    assert np.abs(fake_quant(everything, lo, hi) - everything).max() <= (hi - lo) / 255


@pytest.mark.parametrize("method", ["entropy", "mse", "percentile"])
def test_no_outliers_means_little_clipping(method):
    # A uniform distribution has no tail worth cutting: every observer should keep ~all of it.
    data = np.random.default_rng(1).uniform(-3.0, 3.0, size=100_000).astype(np.float32)
    lo, hi = observe(method, np.array_split(data, 10))
    assert lo < -2.7 and hi > 2.7, (method, lo, hi)


def test_one_sided_data_keeps_its_zero_side():
    relu = np.maximum(np.random.default_rng(2).normal(size=50_000), 0).astype(np.float32)
    for method in ("percentile", "entropy", "mse"):
        lo, hi = observe(method, [relu])
        assert lo == 0.0 and 0.0 < hi <= relu.max(), method


def test_percentile_matches_numpy_quantiles():
    data = np.random.default_rng(3).normal(size=400_000).astype(np.float32)
    lo, hi = observe("percentile:99", np.array_split(data, 8))
    assert lo == pytest.approx(np.quantile(data, 0.01), abs=0.01)
    assert hi == pytest.approx(np.quantile(data, 0.99), abs=0.01)


def skewed(seed: int = 5) -> np.ndarray:
    """A two-sided tensor with a long negative tail and a short positive one (a conv output)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([-rng.exponential(1.0, 300_000), rng.exponential(0.3, 300_000)]).astype(np.float32)


def test_magnitude_cuts_only_the_longer_tail():
    data = skewed()
    lo, hi = observe("magnitude:99.99", np.array_split(data, 8))
    assert hi == pytest.approx(data.max(), abs=1e-3)                    # the short tail keeps its bound
    assert lo == pytest.approx(-np.quantile(np.abs(data), 0.9999), abs=0.02)
    assert data.min() < lo
    p_lo, p_hi = observe("percentile:99.99", np.array_split(data, 8))
    assert p_hi < hi - 0.5 and p_lo == pytest.approx(lo, abs=0.1)       # percentile clips both sides


def test_magnitude_keeps_a_one_sided_tensor_one_sided():
    relu = np.maximum(skewed(6), 0.0)
    lo, hi = observe("magnitude:99.9", [relu])
    assert lo == 0.0 and hi == pytest.approx(np.quantile(relu, 0.999), abs=0.01)


def test_histogram_growth_is_exact():
    # Radius doubling merges bins pairwise; the result equals filling at the final radius.
    rng = np.random.default_rng(4)
    small, large = rng.normal(0, 0.1, 10_000), rng.normal(0, 5.0, 10_000)
    grown = RunningHistogram()
    grown.update(small)
    grown.update(large)
    direct = RunningHistogram()
    direct.radius = grown.radius
    direct.update(np.concatenate([small, large]))
    assert grown.radius >= np.abs(large).max()
    assert np.abs(grown.counts - direct.counts).sum() <= 4   # float rounding at bin edges only
    assert grown.total == 20_000


def test_non_finite_values_are_ignored_and_zeros_handled():
    for method in OBSERVERS:
        obs = make(method)
        obs.update(np.zeros(10, np.float32))            # all-zero sample before any range exists
        obs.update(np.array([-np.inf, 1.0, np.nan, -2.0, np.inf], np.float32))
        lo, hi = obs.range()
        assert np.isfinite(lo) and np.isfinite(hi) and -2.0 <= lo <= 0.0 < hi <= 1.0, method
    assert make("entropy").range() == (0.0, 0.0) and not make("mse").seen


def test_registry_and_arguments():
    assert set(OBSERVERS) == {"auto", "minmax", "percentile", "magnitude", "entropy", "mse"}
    assert make("percentile:99.9").percentile == 99.9
    assert make("magnitude").percentile == 99.999
    for bad in ("nope", "minmax:3", "percentile:abc", "percentile:20", "magnitude:20"):
        with pytest.raises(UsageError):
            make(bad)


def test_kl_threshold_cuts_a_long_thin_tail():
    # An exponential bulk (|x| of a Laplacian) that empties out by bin ~550, plus one outlier
    # at the far end: the kept range must end near the bulk, far from the outlier.
    hist = np.floor(1e6 * np.exp(-np.arange(2048) / 40.0))
    hist[2040] = 1.0
    keep = observers.kl_threshold(hist, 128)
    assert 128 <= keep < 600


def test_entropy_is_not_fooled_by_a_relu_zero_spike():
    # Half the values of a ReLU output are exactly 0. Left in the KL sum, that one bin decided
    # the cut (measured: 1.83 for this data); 0 is exact in any range, so it is taken out.
    relu = np.maximum(np.random.default_rng(2).normal(size=200_000), 0).astype(np.float32)
    lo, hi = observe("entropy", [relu])
    assert lo == 0.0 and hi > 3.5 and hi <= relu.max()


def test_auto_offers_every_method_from_one_histogram(laplace_with_outliers):
    _, _, chunks = laplace_with_outliers
    auto = make("auto")
    for chunk in chunks:
        auto.update(chunk)
    found = auto.candidates()
    assert set(found) == set(observers.Auto.METHODS)
    for method, rng in found.items():
        assert rng == pytest.approx(observe(method, chunks)), method
    assert auto.range() == observe("minmax", chunks)


def test_auto_folds_give_each_sample_the_ranges_of_the_others():
    # Sample k goes to fold k % 2; fold 0's samples are scored with fold 1's ranges and back.
    rng = np.random.default_rng(4)
    chunks = [rng.normal(0, 1, 5000).astype(np.float32) for _ in range(6)]
    chunks[0][7] = 40.0                         # fold 0 only; it also doubles the grid twice
    chunks[3][:100] = 0.0
    auto = make("auto")
    for chunk in chunks:
        auto.update(chunk)
    for k, fold in enumerate(auto.folds):       # the folds partition the full histogram
        others = [c for j, c in enumerate(chunks) if j % 2 == k]
        assert (fold.lo, fold.hi) == observe("minmax", others)
    np.testing.assert_array_equal(auto.folds[0].counts + auto.folds[1].counts, auto.counts)
    held = auto.heldout_candidates()
    assert set(held) == set(observers.Auto.METHODS)
    assert held["minmax"][0] == observe("minmax", chunks[1::2])     # fold 0 meets fold 1's range
    assert held["minmax"][1] == observe("minmax", chunks[0::2])
    assert held["minmax"][1][1] == 40.0 > held["minmax"][0][1]
    p = held["percentile:99.999"][1]
    assert p == pytest.approx(observe("percentile:99.999", chunks[0::2]), rel=1e-3)


def test_auto_folds_with_one_sample_fall_back_to_the_full_range():
    auto = make("auto")
    auto.update(np.array([0.0, 0.0]))           # all-zero first: counted once the grid exists
    auto.update(np.array([-1.0, 2.0]))
    held = auto.heldout_candidates()
    assert held["minmax"] == ((-1.0, 2.0), (0.0, 0.0))
    assert auto.folds[0].counts.sum() == 2 and auto.folds[1].counts.sum() == 2
    single = make("auto")
    single.update(np.array([-1.0, 2.0]))
    assert single.heldout_candidates()["minmax"] == ((-1.0, 2.0), (-1.0, 2.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=50),
                min_size=1, max_size=6),
       st.sampled_from(sorted(OBSERVERS)))
def test_any_data_any_observer_gives_a_range_inside_minmax(chunks, method):
    arrays = [np.array(c, np.float32) for c in chunks]
    lo, hi = observe(method, arrays)
    data = np.concatenate(arrays)
    assert data.min() <= lo <= hi <= data.max() or (lo, hi) == (0.0, 0.0) == (data.min(), data.max())
    if method == "minmax":
        assert (lo, hi) == (data.min(), data.max())


class _AutoWithEntropy(observers.Auto):
    METHODS = ("minmax", "entropy")


@pytest.mark.parametrize("cls, counts", [(observers.Auto, False), (_AutoWithEntropy, True),
                                         (observers.Entropy, True), (observers.Percentile, False)])
def test_exact_zeros_are_counted_only_for_the_entropy_range(cls, counts):
    # Counting is a full pass over the values; only entropy_range reads the count.
    chunks = [np.array([0.0, 1.0, -2.0, 0.0], np.float32), np.array([0.0, 3.0], np.float32)]
    obs = cls()
    for chunk in chunks:
        obs.update(chunk)
    assert obs.exact_zeros == (3 if counts else 0)
    for k, fold in enumerate(getattr(obs, "folds", ())):
        assert fold.exact_zeros == ((2, 1)[k] if counts else 0)


def _binned_by_clipping(values: np.ndarray, radius: float, bins: int) -> np.ndarray:
    """The bin counts as RunningHistogram computed them before it dropped the clip pass."""
    scale = bins / (2.0 * radius)
    pos = values.astype(np.float32) * np.float32(scale)
    pos += np.float32(radius * scale)
    np.clip(pos, 0, bins - 1, out=pos)
    return np.bincount(pos.astype(np.intp), minlength=bins)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=40),
       st.sampled_from([np.float32, np.float64, np.float16]))
def test_binning_without_the_clip_pass_counts_as_clipping_did(values, dtype):
    data = np.array(values, np.float32).astype(dtype)
    data = data[np.isfinite(data)]
    amax = float(np.abs(data).max()) if data.size else 0.0
    if amax == 0.0:
        return
    h = RunningHistogram(bins=64)
    amax = max(amax, RunningHistogram.MIN_RADIUS)        # the floor update() puts under the radius
    above = float(np.nextafter(np.float32(amax), np.float32(np.inf)))     # inf past float32's max
    for radius in (amax, amax * 2.0) + ((above,) if np.isfinite(above) else ()):
        h.radius = radius                   # the grid is any radius >= max |x|, the edge included
        edges = np.concatenate([data, np.array([radius, -radius], dtype)]).astype(dtype)
        edges = edges[np.isfinite(edges) & (np.abs(edges.astype(np.float64)) <= radius)]
        np.testing.assert_array_equal(h.binned(edges), _binned_by_clipping(edges, radius, 64))


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_binning_in_chunks_counts_as_binning_at_once(size):
    values = np.random.default_rng(size).laplace(0.0, 1.0, size * 13 + 5).astype(np.float32)
    h = RunningHistogram(bins=256)
    h.radius = float(np.abs(values).max())
    whole = h.binned(values)
    h.CHUNK = size                      # chunks of ``size`` values, the last one shorter
    np.testing.assert_array_equal(h.binned(values), whole)
    assert whole.sum() == values.size
