"""Quantization parameters (converters.qdq.params): properties that must hold for any range."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.qdq import params

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def dequant(q, p):
    return (np.asarray(q, np.float64) - np.asarray(p.zero_point, np.float64)) * np.asarray(p.scale, np.float64)


def quant(x, p, lo, hi):
    return np.clip(np.round(x / float(p.scale)) + int(p.zero_point), lo, hi)


@settings(max_examples=200, deadline=None)
@given(finite, finite, st.sampled_from(["int8", "uint8", "symmetric"]))
def test_activation_range_zero_is_exact_and_ends_are_covered(a, b, kind):
    lo, hi = min(a, b), max(a, b)
    p = params.activation(lo, hi, symmetric=kind == "symmetric", dtype="uint8" if kind == "uint8" else "int8")
    qmin, qmax = (0, 255) if kind == "uint8" else (-128, 127)
    assert float(p.scale) > 0 and qmin <= int(p.zero_point) <= qmax
    assert dequant(quant(0.0, p, qmin, qmax), p) == 0.0                  # zero is exact
    for end in (min(lo, 0.0), max(hi, 0.0)):                             # both ends representable
        assert abs(dequant(quant(end, p, qmin, qmax), p) - end) <= float(p.scale) * 0.5 + 1e-6 * abs(end) + 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.floats(1e-3, 1e3))
def test_weights_per_channel_symmetric_and_bounded(channels, width, magnitude):
    w = np.random.default_rng(channels * 7 + width).normal(0, magnitude, size=(channels, width, 3)).astype(np.float32)
    q, p = params.weight(w, 0)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127 and not p.zero_point.any()
    assert p.scale.shape == (channels,)
    err = np.abs(dequant(q, params.QuantParams(p.scale.reshape(-1, 1, 1), np.zeros((channels, 1, 1)))) - w)
    assert (err <= p.scale.reshape(-1, 1, 1) / 2 + 1e-6 * magnitude).all()
    assert (np.abs(q).max(axis=(1, 2)) == 127).all()                    # each channel uses its full range


def test_bias_scale_is_input_times_weight_scale():
    q, p = params.bias(np.array([0.5, -1.0, 2.0]), 0.02, np.array([0.1, 0.2, 0.4], np.float32))
    np.testing.assert_allclose(p.scale, [0.002, 0.004, 0.008], rtol=1e-6)
    assert q.dtype == np.int32 and q.tolist() == [250, -250, 250] and not p.zero_point.any()


def test_degenerate_ranges_still_have_a_positive_scale():
    for kind in (True, False):
        p = params.activation(0.0, 0.0, symmetric=kind)
        assert float(p.scale) > 0
    q, p = params.weight(np.zeros((2, 3), np.float32), 0)
    assert (p.scale > 0).all() and not q.any()
