"""A softmax written out op by op (passes/fuse_softmax.py) becomes one SOFTMAX and holds int8.

Forms: jax2tf's (ReduceMax guarded by Max(-inf, .), keepdims=0 sums broadcast back through
Reshape/Unsqueeze), the hand-written keepdims one, an unshifted Exp / sum by Reciprocal, and a
softmax over a middle axis, each after an int8 Linear whose logits span about +-20 (200 classes,
as a classifier head's do).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.converters.ops import harness as H
from tests.converters.passes.test_fuse_normalization import _c, _i, float_build, int8_sqnr, n


def jax_softmax():
    nodes = [n("ReduceMax", ["x"], "mx", axes=[1], keepdims=0), n("Max", ["ninf", "mx"], "mg"),
             n("Reshape", ["mg", "kshape"], "mk"), n("Sub", ["x", "mk"], "z"), n("Exp", ["z"], "e"),
             n("ReduceSum", ["e", "ax"], "s", keepdims=0), n("Unsqueeze", ["s", "ax"], "sk"),
             n("Div", ["e", "sk"], "y")]
    return nodes, {"ninf": _c(-np.inf), "kshape": _i(2, 1), "ax": _i(1)}, (2, 200), 1


def keepdims_softmax():
    nodes = [n("ReduceMax", ["x"], "mx", axes=[-1]), n("Sub", ["x", "mx"], "z"), n("Exp", ["z"], "e"),
             n("ReduceSum", ["e", "ax"], "s"), n("Div", ["e", "s"], "y")]
    return nodes, {"ax": _i(-1)}, (2, 200), 1


def unshifted_reciprocal():
    nodes = [n("Exp", ["x"], "e"), n("ReduceSum", ["e", "ax"], "s"), n("Reciprocal", ["s"], "r"),
             n("Mul", ["r", "e"], "y")]
    return nodes, {"ax": _i(-1)}, (2, 200), 1


def middle_axis():
    nodes = [n("ReduceMax", ["x"], "mx", axes=[1]), n("Sub", ["x", "mx"], "z"), n("Exp", ["z"], "e"),
             n("ReduceSum", ["e", "ax"], "s"), n("Div", ["e", "s"], "y")]
    return nodes, {"ax": _i(1)}, (1, 96, 8), 1


CASES = {f.__name__: f for f in (jax_softmax, keepdims_softmax, unshifted_reciprocal, middle_axis)}


K = 16      # features into the Linear in front


def build(name: str) -> onnx.ModelProto:
    """The case's softmax of the logits ``l = x @ w`` (an int8 Linear in front)."""
    nodes, inits, shape, _ = CASES[name]()
    for node in nodes:
        node.input[:] = ["l" if i == "x" else i for i in node.input]
    w = np.random.default_rng(8).normal(0, 20.0 / 3 / np.sqrt(K), (K, shape[-1])).astype(np.float32)
    return H.model([n("MatMul", ["x", "w"], "l"), *nodes], {"x": (*shape[:-1], K)}, ["y"], {"w": w, **inits})


def logits(name: str, count: int, seed: int) -> list[dict]:
    _, _, shape, _ = CASES[name]()
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1.0, (*shape[:-1], K)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_out_softmax_is_one_softmax(name):
    res = float_build(build(name), logits(name, 1, 0)[0], atol=1e-6, rtol=2e-4)
    assert "SOFTMAX" in res.ops and "EXP" not in res.ops, res.ops


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_out_softmax_holds_int8_fidelity(name):
    # Op by op (EXP of int8 logits, int8 sum, DIV) these measured jax 0.1, keepdims 25.4,
    # middle 26.8, unshifted 0.0 dB; fused 26.3, 26.3, 28.9, 26.3 (the int8 logits bound them)
    sqnr, q = int8_sqnr(build(name), logits(name, 16, 0), logits(name, 4, 1))
    assert sqnr > 25.8 and "EXP" not in q.ops, q.ops


def test_a_sum_broadcast_along_another_axis_is_left_as_written():
    # e / sum over the last axis, keepdims=0, broadcast along the rows: not a softmax
    nodes = [n("Exp", ["x"], "e"), n("ReduceSum", ["e", "ax"], "s", keepdims=0), n("Div", ["e", "s"], "y")]
    m = H.model(nodes, {"x": (6, 6)}, ["y"], {"ax": _i(-1)})
    res = float_build(m, {"x": np.random.default_rng(3).normal(0, 2.0, (6, 6)).astype(np.float32)}, atol=1e-6)
    assert "SOFTMAX" not in res.ops, res.ops
