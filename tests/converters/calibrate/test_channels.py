"""Channel means gathered in the calibration pass (calibrate/channels.py, runner.collect_stats),
against NumPy over the same samples in a real onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from converters.calibrate import collect_ranges
from converters.calibrate.channels import ChannelMeans, channel_axes, range_axes
from converters.calibrate.runner import collect_stats
from tests.converters.ops import harness as H

RNG = np.random.default_rng(3)


def layers(opset: int, outputs=("g", "m")):
    """Conv (NCHW, channel axis 1) -> Relu -> Flatten -> Gemm(transA) and a 3-D MatMul (last
    axis): each layer input's channels along the axis its layer reads them."""
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    gw = rng.normal(0, 0.3, (5, 64)).astype(np.float32)
    mw = rng.normal(0, 0.3, (6, 2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]),
             helper.make_node("Gemm", ["ft", "gw"], ["g"], transA=1, transB=1),
             helper.make_node("MatMul", ["s", "mw"], ["m"])]
    return H.model(nodes, {"x": (1, 3, 4, 4), "s": (1, 7, 6)}, list(outputs), {"w": w, "gw": gw, "mw": mw}, opset=opset)


def data(n: int = 6):
    return [{"x": RNG.uniform(0, 2, (1, 3, 4, 4)).astype(np.float32),
             "s": RNG.normal(1, 1, (1, 7, 6)).astype(np.float32)} for _ in range(n)]


def test_channel_axes_follow_the_reading_layer():
    m = layers(17)
    assert channel_axes(m, {"x", "c", "r", "f", "ft", "s"}) == {"x": (1, 4), "ft": (0, 2), "s": (2, 3)}
    assert channel_axes(m, {"c", "r"}) == {}                    # only the observed tensors
    del m.graph.value_info[:]                                   # no shapes: the layers tell the ranks
    assert channel_axes(m, {"x", "ft", "s"}) == {"x": (1, 4), "ft": (0, 2), "s": (2, 3)}


@pytest.mark.parametrize("opset", [13, 18])     # ReduceMean's axes: an attribute, then an input
def test_means_match_numpy_and_ranges_match_collect_ranges(opset):
    m, samples = layers(opset), data()
    stats = collect_stats(m, samples, progress=False)
    assert stats.count == len(samples)
    assert stats.ranges == collect_ranges(m, samples, progress=False)
    ft = [H.ort_run(layers(opset, outputs=("ft",)), s)[0] for s in samples]
    want = {("x", 1): np.mean([s["x"].mean(axis=(0, 2, 3)) for s in samples], axis=0),
            ("ft", 0): np.mean([v.mean(axis=1) for v in ft], axis=0),
            ("s", 2): np.mean([s["s"].mean(axis=(0, 1)) for s in samples], axis=0)}
    assert set(stats.means) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(stats.means[key], value, rtol=1e-5, err_msg=str(key))


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_a_non_finite_sample_drops_that_tensor_and_keeps_the_ranges_finite(method):
    m, samples = layers(17), data()
    samples[2]["s"][0, 3, 1] = np.nan
    stats = collect_stats(m, samples, method=method, progress=False)
    assert ("s", 2) not in stats.means and ("x", 1) in stats.means
    assert all(np.isfinite(r).all() for r in stats.ranges.values())
    assert stats.ranges["s"] == pytest.approx((min(np.nanmin(s["s"]) for s in samples),
                                               max(np.nanmax(s["s"]) for s in samples)))


def test_running_means_average_samples_and_skip_changing_channel_counts():
    acc = ChannelMeans()
    acc.update({"a": np.array([1.0, 2.0]), "b": np.array([1.0])})
    acc.update({"a": np.array([3.0, 6.0]), "b": np.array([1.0, 2.0])})
    assert set(acc.means({"a": (1, 2), "b": (0, 1)})) == {("a", 1)}
    np.testing.assert_array_equal(acc.means({"a": (1, 2)})[("a", 1)], [2.0, 4.0])


def test_batchnorm_inputs_get_per_channel_ranges_with_minmax_only():
    rng = np.random.default_rng(1)
    bn = [rng.normal(0, 1, 4).astype(np.float32) for _ in range(3)] + [np.abs(rng.normal(1, 0.2, 4)).astype(np.float32)]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "s", "t", "mu", "var"], ["y"])]
    m = H.model(nodes, {"x": (1, 4, 3, 3)}, ["y"], dict(zip(["s", "t", "mu", "var"], bn)))
    assert range_axes(m, {"x", "r", "y"}) == {"r": (1, 4)}
    samples = [{"x": rng.normal(i, 1, (1, 4, 3, 3)).astype(np.float32)} for i in range(5)]
    stats = collect_stats(m, samples, progress=False)
    r = np.maximum(np.concatenate([s["x"] for s in samples]), 0)
    lo, hi = stats.channel_ranges[("r", 1)]
    np.testing.assert_array_equal(lo, r.min(axis=(0, 2, 3)))
    np.testing.assert_array_equal(hi, r.max(axis=(0, 2, 3)))
    assert stats.ranges == collect_ranges(m, samples, progress=False)      # the whole range is theirs
    assert collect_stats(m, samples, method="percentile", progress=False).channel_ranges == {}
