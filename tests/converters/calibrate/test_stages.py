"""Activations fetched stage by stage (calibrate/stages.py): the same values as one run, in a real
onnxruntime, with only one stage's outputs alive at a time."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converters.calibrate import runner, stages
from converters.calibrate.runner import collect_stats
from tests.converters.ops import harness as H


def skip_model():
    """x -> Relu a -> Sigmoid b -> Mul(a, b) c -> Add(c, x) d -> Reshape e: ``x`` and ``a`` cross cuts."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Mul", ["a", "b"], ["c"]),
             helper.make_node("Add", ["c", "x"], ["d"]),
             helper.make_node("Reshape", ["d", "shape"], ["e"]),
             helper.make_node("Conv", ["x", "w"], ["f"], pads=[1, 1, 1, 1])]
    rng = np.random.default_rng(0)
    return H.model(nodes, {"x": (1, 2, 6, 6)}, ["e", "f"],
                   {"shape": np.array([1, 72], np.int64), "w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32)})


def if_model():
    """A branch reads ``a`` from the outer scope, two stages after ``a`` was made."""
    then = helper.make_graph([helper.make_node("Neg", ["a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Abs", ["a"], ["o"])], "else", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Sigmoid", ["x"], ["b"]),
             helper.make_node("If", ["flag"], ["branch"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["branch", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def exposed(m):
    types = runner.value_types(m)
    _, produced = runner.float_tensor_names(m, types)
    return runner.expose(m, produced, types), produced


def make(model):
    return runner.make_session(model, in_order=True, spin=False, arena="shared")


@pytest.mark.parametrize("arena", ["shared", False])
@pytest.mark.parametrize("build, feeds", [
    (skip_model, {"x": np.random.default_rng(1).normal(size=(1, 2, 6, 6)).astype(np.float32)}),
    (if_model, {"x": np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32), "flag": np.array(True)}),
    (if_model, {"x": np.random.default_rng(3).normal(size=(2, 3)).astype(np.float32), "flag": np.array(False)}),
])
def test_every_stage_split_gives_the_values_of_one_run(build, feeds, arena):
    """Every value is kept here while later stages run: with the shared arena (the runner's
    choice), an output's memory stays its own while other sessions allocate from the arena."""
    assert runner.shared_arena()
    model, produced = exposed(build())
    make = functools.partial(runner.make_session, in_order=True, spin=False, arena=arena)
    whole = dict(zip(produced, runner.make_session(model).run(produced, feeds)))
    one = stages.Staged(model, make, budget=1 << 40)
    split = stages.Staged(model, make, budget=1)           # a cut after every node
    assert len(one.stages) == 1 and len(split.stages) == len(model.graph.node)
    for staged in (one, split):
        got = dict(staged.stream(feeds, lambda session, names, f: session.run(names, f)))
        assert set(produced) <= set(got)
        for name in produced:
            np.testing.assert_array_equal(got[name], whole[name], err_msg=name)


def test_only_what_later_stages_read_crosses_a_cut():
    model, _ = exposed(skip_model())
    split = stages.Staged(model, make, budget=1)
    inputs = [set(ins) for _, ins, _, _ in split.stages]
    assert inputs[0] == {"x"}                   # Relu
    assert inputs[2] == {"a", "b"}              # Mul reads a from two stages back
    assert inputs[3] == {"c", "x"}              # Add reads the graph input again
    assert stages.cuts(model, budget=1 << 40) == [(0, len(model.graph.node))]


def test_sizes_shape_inference_left_unknown_are_estimated_from_the_inputs():
    m = skip_model()
    del m.graph.value_info[:]                   # as a Slice whose bounds a Shape computes leaves them
    sizes = stages.estimated_bytes(m)
    assert sizes["x"] == 72 * 4
    assert sizes["a"] == sizes["c"] == sizes["d"] == 72 * 4     # the largest input's
    assert sizes["f"] == 108 * 4                # a graph output keeps its declared shape


@pytest.mark.parametrize("method", ["auto", "percentile:99.9", "entropy"])
def test_staged_calibration_gives_the_same_statistics(method, monkeypatch):
    m = skip_model()
    data = H.samples_for(m, n=6, seed=5)
    monkeypatch.setattr(stages, "BUDGET", 1 << 40)
    one = collect_stats(m, data, method=method, progress=False)
    monkeypatch.setattr(stages, "BUDGET", 1)
    split = collect_stats(m, data, method=method, progress=False)
    assert split.ranges == one.ranges and list(split.ranges) == list(one.ranges)
    assert split.means.keys() == one.means.keys() and split.means        # the Conv's input channel means
    for key in one.means:
        np.testing.assert_array_equal(split.means[key], one.means[key])
