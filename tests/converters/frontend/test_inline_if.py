"""inline_constant_ifs: an If on a constant condition becomes its live branch in the ONNX graph;
an If on data stays. Each result is checked and run against the original in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.frontend.inline_if import inline_constant_ifs


def _model(cond_from_data: bool, passthrough: bool) -> onnx.ModelProto:
    """y = If(c): then x * k (k an outer initializer; or the branch's own initializer, passed
    through), else x + k."""
    then_nodes = [] if passthrough else [helper.make_node("Mul", ["x", "k"], ["t"], name="then_mul")]
    own = [numpy_helper.from_array(np.full(3, 5.0, np.float32), "five")] if passthrough else []
    then = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info("five" if passthrough else "t",
                                                                                     TensorProto.FLOAT, None)], own)
    other = helper.make_graph([helper.make_node("Add", ["x", "k"], ["t2"], name="else_add")], "else", [],
                              [helper.make_tensor_value_info("t2", TensorProto.FLOAT, None)])
    inits = [numpy_helper.from_array(np.full(3, 2.0, np.float32), "k"),
             numpy_helper.from_array(np.array(16000, np.int64), "rate")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])]
    if cond_from_data:
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(16000, np.int64), "sr"))
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["c"], name="eq"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(["y"], {k: v for k, v in feeds.items() if k in names})[0]


@pytest.mark.parametrize("passthrough", [False, True])
def test_constant_condition_inlines_the_live_branch(passthrough):
    model = _model(cond_from_data=False, passthrough=passthrough)
    inlined = inline_constant_ifs(model)
    onnx.checker.check_model(inlined, full_check=True)
    ops = [n.op_type for n in inlined.graph.node]
    assert "If" not in ops and ("Identity" if passthrough else "Mul") in ops
    feeds = {"x": np.arange(3, dtype=np.float32)}
    np.testing.assert_array_equal(_run(inlined, feeds), _run(model, feeds))
    assert [n.op_type for n in model.graph.node] == ["Equal", "If"]      # the caller's proto is untouched


def test_condition_from_data_keeps_the_if():
    model = _model(cond_from_data=True, passthrough=False)
    assert [n.op_type for n in inline_constant_ifs(model).graph.node] == ["Equal", "If"]
