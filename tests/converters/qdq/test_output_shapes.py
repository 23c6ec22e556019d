"""A QDQ model passes the ONNX checker when an output's shape cannot be inferred again after the
input shapes are pinned (the frontend used to drop the output's shape field)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters import api
from converters.config import ConvertConfig
from converters.frontend import load_model
from converters.verify.metrics import sqnr_db


def _squeeze_on_computed_axes(path) -> str:
    """y = Squeeze(Unsqueeze(x W), Neg(-1)): inference cannot tell y's rank (Neg is not propagated)."""
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Unsqueeze", ["m", "one"], ["u"]),
             h.make_node("Neg", ["negone"], ["ax"]), h.make_node("Squeeze", ["u", "ax"], ["y"])]
    graph = h.make_graph(nodes, "sq", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])],
                         [nh.from_array(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32), "W"),
                          nh.from_array(np.array([1], np.int64), "one"), nh.from_array(np.array([-1], np.int64), "negone")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("shapes", [(), (("x", (1, 4)),), (("x", (3, 4)),)])
def test_qdq_keeps_the_output_shape_field_after_pinning(tmp_path, shapes):
    path = _squeeze_on_computed_axes(tmp_path / "sq.onnx")
    batch = dict(shapes).get("x", (1, 4))[0]
    loaded = load_model(path, dict(shapes) or None)
    (out,) = loaded.graph.output
    assert out.type.tensor_type.HasField("shape") and len(out.type.tensor_type.shape.dim) == 2
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(1).normal(size=(16, batch, 4)).astype(np.float32))
    result = api.convert(ConvertConfig(model=path, output=tmp_path / "sq.q.onnx", calib=tmp_path / "c.npz",
                                       input_shapes=shapes, progress=False))
    qdq = onnx.load_from_string(result.files["model.qdq.onnx"])
    onnx.checker.check_model(qdq)
    x = np.random.default_rng(2).normal(size=(batch, 4)).astype(np.float32)
    got = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == ref.shape == (batch, 5) and sqnr_db(ref, got) > 25
