"""control_inputs: the graph inputs whose values only steer If/Loop control (candidates for being
frozen from the calibration data, converters/freeze.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from converters.frontend.control_inputs import control_inputs
from tests.converters.frontend.graphs import const


def _branch(name: str, body: list, reads: str = "x") -> onnx.GraphProto:
    nodes = body or [h.make_node("Mul", [reads, f"k{name}"], [f"y{name}"])]
    return h.make_graph(nodes, name, [], [h.make_tensor_value_info(f"y{name}", T.FLOAT, [1, 4])],
                        [const(f"k{name}", np.float32(2))])


def _model(nodes, outputs=("y",), inits=()) -> onnx.ModelProto:
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [1, 4]), h.make_tensor_value_info("sr", T.INT64, [])]
    outs = [h.make_tensor_value_info(o, T.FLOAT if o == "y" else T.INT64, None) for o in outputs]
    return h.make_model(h.make_graph(nodes, "g", inputs, outs, [const("rate", np.int64(16000)), *inits]),
                        opset_imports=[h.make_opsetid("", 17)])


def _if(then=None, reads="x"):
    return h.make_node("If", ["c"], ["y"], then_branch=then or _branch("then", []),
                       else_branch=_branch("else", [], reads))


EQUAL = h.make_node("Equal", ["sr", "rate"], ["c"])
CASES = {
    "an If condition": ([EQUAL, _if()], ("y",), ["sr"]),
    "through a Cast and a Not": ([h.make_node("Cast", ["sr"], ["f"], to=T.FLOAT),
                                  h.make_node("Greater", ["f", "half"], ["g"]),
                                  h.make_node("Not", ["g"], ["c"]), _if()], ("y",), ["sr"]),
    "also read inside a branch": ([EQUAL, _if(reads="sr")], ("y",), []),
    "also a graph output": ([EQUAL, _if(), h.make_node("Identity", ["sr"], ["sr_out"])], ("y", "sr_out"), []),
    "also data": ([EQUAL, h.make_node("If", ["c"], ["t"], then_branch=_branch("then", []),
                                      else_branch=_branch("else", [])),
                   h.make_node("Cast", ["sr"], ["f"], to=T.FLOAT), h.make_node("Mul", ["t", "f"], ["y"])],
                  ("y",), []),
    "no control flow": ([h.make_node("Cast", ["sr"], ["f"], to=T.FLOAT), h.make_node("Mul", ["x", "f"], ["y"])],
                        ("y",), []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_control_inputs(case):
    nodes, outputs, expected = CASES[case]
    model = _model(nodes, outputs, [const("half", np.float32(12000))])
    assert control_inputs(model) == expected


def test_a_loop_trip_count_is_control():
    body = h.make_graph([h.make_node("Identity", ["cond"], ["cond_out"]),
                         h.make_node("Add", ["acc", "x"], ["acc_out"])], "body",
                        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond", T.BOOL, []),
                         h.make_tensor_value_info("acc", T.FLOAT, [1, 4])],
                        [h.make_tensor_value_info("cond_out", T.BOOL, []),
                         h.make_tensor_value_info("acc_out", T.FLOAT, [1, 4])])
    loop = h.make_node("Loop", ["sr", "", "x"], ["y"], body=body)
    assert control_inputs(_model([loop])) == ["sr"]
