"""The tensorrt profile's per-tensor symmetric amax (converters/qdq/amax.py), on histograms."""
from __future__ import annotations

import numpy as np
import pytest

from converters.calibrate.observers import RunningHistogram
from converters.qdq import amax

RNG = np.random.default_rng(5)


def histogram(*arrays) -> RunningHistogram:
    h = RunningHistogram()
    for a in arrays:
        h.update(np.asarray(a, np.float32))
    return h


def weighted_error(values: np.ndarray, a: float) -> float:
    """The objective amax.py minimises, on the values themselves."""
    v = np.abs(values.astype(np.float64))
    clipped = np.maximum(v - a, 0.0)
    return amax.CLIP_WEIGHT * float((clipped ** 2).sum()) + float((v <= a).sum()) * (a / 127) ** 2 / 12


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_uniform_data_keeps_its_full_range(sign):
    values = sign * RNG.uniform(0, 3.0, 200_000)
    a = amax.best_amax(histogram(values))
    assert 0.97 * 3.0 <= a <= 3.0 * 1.001


def test_rare_outliers_are_clipped_and_the_error_is_lower_than_min_max():
    values = np.concatenate([RNG.laplace(0, 0.2, 400_000), [25.0, -18.0]])
    a = amax.best_amax(histogram(values[:200_000], values[200_000:]))
    assert a < 0.9 * 25.0
    assert weighted_error(values, a) < weighted_error(values, 25.0)


def test_a_one_sided_tensor_gets_the_same_amax_as_its_mirror():
    values = np.maximum(RNG.normal(0.5, 1.0, 100_000), 0.0)         # after a ReLU
    assert amax.best_amax(histogram(values)) == pytest.approx(amax.best_amax(histogram(-values)), rel=0.02)


def test_nothing_but_zeros_has_no_amax():
    assert amax.best_amax(histogram(np.zeros(100))) is None
    assert amax.best_amax(RunningHistogram()) is None
