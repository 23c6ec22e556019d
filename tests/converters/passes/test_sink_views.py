"""Unit-dimension views moved below the bias Add and the activation (converters/passes/sink_views.py).

The graph is tf2onnx's Keras Conv1D: Unsqueeze -> Conv -> Squeeze -> Add(bias [1, C, 1]) -> Relu,
twice. With the views sunk, the bias and the Relu fold into each Conv: the TFLite model has no ADD
or RELU left, the float model still matches onnxruntime, and the int8 model rounds once per layer.
"""
import numpy as np
from onnx import helper

from converters.frontend import to_graph
from converters.passes import run_pipeline, sink_views
from tests.converters.ops import harness as H

RNG = np.random.default_rng(3)


def _conv1d_block(c_in: int = 6, c: int = 8, width: int = 16):
    nodes, inits, x = [], {"axis": np.array([2], np.int64)}, "x"
    for k, (ci, co) in enumerate(((c_in, c), (c, c))):
        inits[f"w{k}"] = RNG.normal(0, 0.4, (co, ci, 1, 3)).astype(np.float32)
        inits[f"b{k}"] = RNG.normal(0.5, 1.0, (1, co, 1)).astype(np.float32)
        nodes += [helper.make_node("Unsqueeze", [x, "axis"], [f"u{k}"]),
                  helper.make_node("Conv", [f"u{k}", f"w{k}"], [f"c{k}"], pads=[0, 1, 0, 1]),
                  helper.make_node("Squeeze", [f"c{k}", "axis"], [f"s{k}"]),
                  helper.make_node("Add", [f"s{k}", f"b{k}"], [f"a{k}"]),
                  helper.make_node("Relu", [f"a{k}"], [f"r{k}"])]
        x = f"r{k}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    return H.model(nodes, {"x": (1, c_in, width)}, ["y"], inits)


def test_bias_and_relu_reach_the_conv():
    graph = to_graph(_conv1d_block())
    assert sink_views.run(graph)
    run_pipeline(graph)
    ops = [n.op for n in graph.nodes]
    assert "Add" not in ops and "Relu" not in ops, ops


def test_float_and_int8_match_onnxruntime():
    m = _conv1d_block()
    samples = [{"x": RNG.normal(0, 1, (1, 6, 16)).astype(np.float32)} for _ in range(16)]
    _, q = H.check(m, samples=samples, forbid=["ADD", "RELU"], steps=2.0)
    assert "ADD" not in q.ops and "RELU" not in q.ops, q.ops
