"""The LiteRT self-check names the ONNX node behind the op LiteRT refuses, as --keep-float takes it.

The refused model is a real conversion with one op broken afterwards (a second input on TANH),
so the message is LiteRT's own ("Node number 9 (TANH) failed to prepare")."""
from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import api, tflite
from converters.calibrate import collect_ranges
from converters.errors import ConvertError
from converters.frontend import load_model
from tests.converters import io_models


def _break(flat: bytes, index: int) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    op = model.subgraphs[0].operators[index]
    op.inputs = np.array([op.inputs[0], op.inputs[0]], np.int32)     # every activation takes one input
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("quantize", ["int8", "none"])
def test_self_check_hint_names_the_onnx_node(tmp_path, quantize):
    model = load_model(io_models.stateful(tmp_path / "vad.onnx"))
    rec = io_models.recording(16)
    samples = [{"x": x, "sr": np.asarray(sr), "state": np.zeros((1, 8), np.float32)}
               for x, sr in zip(rec["x"], rec["sr"])]
    ranges = collect_ranges(model, samples, progress=False) if quantize == "int8" else None
    result = tflite.build(model, ranges, tflite.TFLiteOptions(quantize=quantize))
    api.self_check(result.flatbuffer, result, model)                      # the real one loads
    index = result.ops.index("TANH")
    with pytest.raises(ConvertError) as info:
        api.self_check(_break(result.flatbuffer, index), result, model)
    error = info.value
    assert f"Node number {index} (TANH)" in error.message
    assert error.where == "ONNX node(s) tanh" and "--keep-float tanh" in error.hint


def test_failing_nodes_ignores_numbers_that_are_not_this_op():
    class Result:
        ops, op_nodes = ["FULLY_CONNECTED", "TANH"], ["in_proj", "tanh"]
    from onnx import helper
    model = helper.make_model(helper.make_graph([helper.make_node("Tanh", ["a"], ["b"], name="tanh"),
                                                 helper.make_node("MatMul", ["b", "w"], ["c"], name="in_proj")],
                                                "g", [], []))
    message = "Node number 1 (TfLiteXNNPackDelegate) failed to prepare. Node number 0 (FULLY_CONNECTED) failed"
    assert api.failing_nodes(message, Result, model) == ["in_proj"]
    assert api.failing_nodes("Node number 7 (TANH) failed to prepare", Result, model) == []
