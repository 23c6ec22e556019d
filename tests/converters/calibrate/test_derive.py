"""Ranges computed from other tensors' instead of reduced in onnxruntime (calibrate/derive.py):
the same numbers the reductions give, in a real onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from converters.calibrate import derive, runner
from converters.calibrate.runner import collect_ranges
from tests.converters.ops import harness as H


def copies_model():
    """a, b -> Concat -> Reshape -> Transpose -> Relu; a -> Flatten -> Identity; Sigmoid(a) is not a copy."""
    nodes = [helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
             helper.make_node("Reshape", ["cat", "shape"], ["flat"]),
             helper.make_node("Transpose", ["flat"], ["t"], perm=[1, 0]),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Flatten", ["a"], ["fa"]),
             helper.make_node("Identity", ["fa"], ["ia"]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Concat", ["s", "a"], ["mixed"], axis=1)]
    return H.model(nodes, {"a": (1, 2, 3), "b": (1, 4, 3)}, ["r", "ia", "mixed"],
                   {"shape": np.array([6, 3], np.int64)})


def test_derivable_picks_exact_functions_of_observed_tensors():
    m = copies_model()
    observed = {"a", "b", "cat", "flat", "t", "r", "fa", "ia", "s", "mixed"}
    found = derive.derivable(m, observed - {"a", "b"}, observed)
    assert list(found) == ["cat", "flat", "t", "r", "fa", "ia", "mixed"]       # graph order; not the Sigmoid
    assert found["mixed"] == ("Concat", ["s", "a"])
    assert "flat" not in derive.derivable(m, observed - {"a", "b"}, observed, keep={"flat"})


@pytest.mark.parametrize("shift", [-10.0, 0.0, 10.0])       # Relu of all-negative, mixed, all-positive values
def test_derived_ranges_equal_the_reduced_ones(shift, monkeypatch):
    m = copies_model()
    rng = np.random.default_rng(4)
    data = [{"a": rng.normal(shift, 1, (1, 2, 3)).astype(np.float32),
             "b": rng.normal(shift, 3, (1, 4, 3)).astype(np.float32)} for _ in range(5)]
    data[3]["b"][0, 1, 1] = np.nan                            # dropped by the observers either way
    fetched = []
    original = runner.Fetcher.__init__

    def spy(self, model, names, *args, **kwargs):
        fetched.append(list(names))
        original(self, model, names, *args, **kwargs)
    monkeypatch.setattr(runner.Fetcher, "__init__", spy)
    derived = collect_ranges(m, data, progress=False)
    assert fetched[-1] == ["s"]                                # the only tensor reduced in onnxruntime
    monkeypatch.setattr(derive, "derivable", lambda *args, **kwargs: {})
    reduced = collect_ranges(m, data, progress=False)
    assert derived == reduced and list(derived) == list(reduced)


def test_copies_share_their_sources_histograms():
    # Reshape/Transpose/Flatten/Identity hold each value of their input once: one observer serves both
    m = copies_model()
    observed = {"cat", "flat", "t", "r", "fa", "ia", "s", "mixed"}
    found = derive.copies(m, observed, observed | {"a", "b"}, keep={"r"})
    assert found == {"flat": "cat", "t": "cat", "fa": "a", "ia": "a"}       # followed back to the source
    assert "ia" not in derive.copies(m, observed, observed | {"a", "b"}, keep={"ia"})     # a graph output


@pytest.mark.parametrize("method", ["auto", "percentile:99.9"])
def test_shared_histograms_give_the_ranges_observed_ones_do(method, monkeypatch):
    m = copies_model()
    rng = np.random.default_rng(7)
    data = [{"a": rng.laplace(0, 1, (1, 2, 3)).astype(np.float32),
             "b": rng.laplace(0, 3, (1, 4, 3)).astype(np.float32)} for _ in range(6)]
    shared = collect_ranges(m, data, method=method, progress=False)
    monkeypatch.setattr(derive, "copies", lambda *args, **kwargs: {})
    observed = collect_ranges(m, data, method=method, progress=False)
    assert shared == observed and shared["flat"] == shared["cat"]
