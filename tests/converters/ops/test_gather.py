"""Gather with run-time indices: embedding lookups (token ids, a graph input, over a constant
table), float and int8, in LiteRT against onnxruntime. Constant indices: ``test_shape.py``."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from tests.converters.ops import harness as H

VOCAB, DIM, SEQ = 50, 8, 6
RNG = np.random.default_rng(0)
TABLE = RNG.normal(0, 0.5, (VOCAB, DIM)).astype(np.float32)
POSITIONS = RNG.normal(0, 0.1, (1, SEQ, DIM)).astype(np.float32)


def embedding(ids_type: int, then_add: bool) -> onnx.ModelProto:
    """ids (1, SEQ) -> word_embeddings[ids] (+ position embeddings): BERT's first op."""
    nodes = [helper.make_node("Gather", ["word_embeddings", "ids"], ["e" if then_add else "y"], axis=0)]
    inits = [numpy_helper.from_array(TABLE, "word_embeddings")]
    if then_add:
        nodes.append(helper.make_node("Add", ["e", "pos"], ["y"]))
        inits.append(numpy_helper.from_array(POSITIONS, "pos"))
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", ids_type, (1, SEQ))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return frontend.prepare(onnx.shape_inference.infer_shapes(m))


def id_samples(dtype, low: int, n: int = 8) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"ids": rng.integers(low, VOCAB, (1, SEQ)).astype(dtype)} for _ in range(n)]


CASES = {
    # id: (ONNX index type, numpy dtype, lowest id, followed by an Add)
    "int64_ids": (TensorProto.INT64, np.int64, 0, False),
    "int32_ids": (TensorProto.INT32, np.int32, 0, False),
    "negative_ids": (TensorProto.INT64, np.int64, -VOCAB, False),   # ONNX: counted from the end
    "ids_then_position_add": (TensorProto.INT64, np.int64, 0, True),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_embedding_lookup(case):
    onnx_type, dtype, low, then_add = CASES[case]
    m = embedding(onnx_type, then_add)
    samples = id_samples(dtype, low)
    feeds = samples[0]
    ref = H.ort_run(m, feeds)[0]
    res = H.convert(m, "none")
    np.testing.assert_allclose(H.tflite_run(res, feeds)[0], ref, atol=1e-6)
    assert "GATHER" in res.ops and "FLOOR_MOD" in res.ops
    assert ("CAST" in res.ops) == (dtype == np.int64), res.ops
    q = H.convert(m, "int8", samples=samples)
    assert q.ops.count("DEQUANTIZE") == 1, q.ops          # the lookup itself runs in int8
    scale = H.output_scale(q)
    for feed in samples[1:4]:                            # ids the calibration did not see too
        err = np.abs(H.tflite_run(q, feed)[0] - H.ort_run(m, feed)[0]).max() / scale
        assert err <= (1.01 if not then_add else 2.0), f"off by {err:.2f} steps"


def test_lookup_of_a_computed_tensor_by_runtime_indices():
    """Gather along axis 1 of an activation (a Relu output) by an index input."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "i"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 7, 3)),
                                           helper.make_tensor_value_info("i", TensorProto.INT64, (4,))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m = frontend.prepare(onnx.shape_inference.infer_shapes(m))
    rng = np.random.default_rng(2)
    feeds = {"x": rng.normal(size=(2, 7, 3)).astype(np.float32), "i": np.array([6, 0, -1, 3], np.int64)}
    res = H.convert(m, "none")
    np.testing.assert_allclose(H.tflite_run(res, feeds)[0], H.ort_run(m, feeds)[0], atol=1e-6)
