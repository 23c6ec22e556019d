"""Float16 compute (mixed-precision exports) is raised to float32 by the frontend (frontend/half.py).

The graph is what Keras ``mixed_float16`` through tf2onnx writes: a float32 input cast to float16,
float16 weights and a float16 Constant, and a float16 graph output; the second variant takes a
float16 input, as a ``model.half()`` torch export does. LiteRT runs the converted model against
onnxruntime running the float16 original (tolerance: float16 rounding, and int8 steps).
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from tests.converters.ops import harness as H

F16 = TensorProto.FLOAT16


def _half_model(half_input: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 6)).astype(np.float16), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.3, (6,)).astype(np.float16), "b")
    head = [] if half_input else [helper.make_node("Cast", ["x"], ["xh"], to=F16)]
    nodes = [*head,
             helper.make_node("MatMul", ["x" if half_input else "xh", "w"], ["mm"]),
             helper.make_node("Constant", [], ["bias"], value=b),
             helper.make_node("Add", ["mm", "bias"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["act"]),
             helper.make_node("Softmax", ["act"], ["y"], axis=-1),
             helper.make_node("Cast", ["act"], ["y32"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("x", F16 if half_input else TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", F16, None), helper.make_tensor_value_info("y32", TensorProto.FLOAT, None)],
        [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


@pytest.mark.parametrize("half_input", [False, True], ids=["cast_in", "half_input"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_float16_graph_converts_and_matches(half_input, quantize):
    original = _half_model(half_input)
    prepared = frontend.prepare(original)
    assert not any(t.data_type == F16 for t in prepared.graph.initializer)
    assert all(vi.type.tensor_type.elem_type != F16 for vi in (*prepared.graph.input, *prepared.graph.output))
    rng = np.random.default_rng(1)
    samples = [{"x": rng.uniform(-2, 2, (2, 8)).astype(np.float32)} for _ in range(16)]
    res = H.convert(prepared, quantize, samples=samples)
    for feeds in samples[:4]:
        refs = H.ort_run(original, {"x": feeds["x"].astype(np.float16 if half_input else np.float32)})
        for i, (ref, got) in enumerate(zip(refs, H.tflite_run(res, feeds))):
            tol = 2e-2 if quantize == "none" else 3 * (H.output_scale(res, i) or 2e-2)
            np.testing.assert_allclose(got, ref.astype(np.float32), atol=tol, rtol=1e-2)


def test_the_callers_model_is_not_edited():
    original = _half_model(False)
    frontend.prepare(original)
    assert any(t.data_type == F16 for t in original.graph.initializer)
