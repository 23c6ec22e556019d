"""A one-hot embedding (``MatMul(Cast(Equal(ids, arange K)), table)``, how jax2tf and Keras export
``one_hot`` + ``Dense``; magika's byte embedding) becomes one GATHER of the table
(converters/passes/onehot_gather.py): exact in float (ids outside [0, K) read a zero row, as the
one-hot does), int8 without a float island, in LiteRT against onnxruntime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from converters.passes import fold_constants, onehot_gather
from tests.converters.ops import harness as H

K, DIM, SEQ = 20, 8, 12
RNG = np.random.default_rng(3)
TABLE = RNG.normal(0, 0.5, (K, DIM)).astype(np.float32)


def one_hot_embedding(iota: np.ndarray, ids_type=TensorProto.INT32) -> onnx.ModelProto:
    """ids (1, SEQ) -> Reshape (1, SEQ, 1) -> Expand to its own shape (computed with Shape, as
    tf2onnx writes BroadcastTo) -> Equal(iota) -> Cast float -> MatMul(table) -> Tanh."""
    nodes = [helper.make_node("Reshape", ["ids", "col"], ["r"]),
             helper.make_node("Shape", ["r"], ["rs"]),
             helper.make_node("Expand", ["r", "rs"], ["e"]),
             helper.make_node("Equal", ["e", "iota"], ["hot"]),
             helper.make_node("Cast", ["hot"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["f", "table"], ["m"]),
             helper.make_node("Tanh", ["m"], ["y"])]
    dtype = np.int32 if ids_type == TensorProto.INT32 else np.int64
    inits = [numpy_helper.from_array(np.array([1, SEQ, 1], np.int64), "col"),
             numpy_helper.from_array(iota.astype(dtype), "iota"), numpy_helper.from_array(TABLE, "table")]
    graph = helper.make_graph(nodes, "onehot", [helper.make_tensor_value_info("ids", ids_type, (1, SEQ))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    m.ir_version = 8
    return frontend.prepare(onnx.shape_inference.infer_shapes(m))


def samples(dtype, n: int = 12) -> list[dict]:
    """Ids in [-3, K + 3): some outside the one-hot's range (an all-zero row)."""
    return [{"ids": RNG.integers(-3, K + 3, (1, SEQ)).astype(dtype)} for _ in range(n)]


@pytest.mark.parametrize("ids_type", [TensorProto.INT32, TensorProto.INT64], ids=["int32", "int64"])
def test_one_hot_matmul_becomes_a_gather(ids_type):
    m = one_hot_embedding(np.arange(K).reshape(1, 1, K), ids_type)
    data = samples(np.int32 if ids_type == TensorProto.INT32 else np.int64)
    res = H.convert(m, "none")
    assert "GATHER" in res.ops and "EQUAL" not in res.ops and "BATCH_MATMUL" not in res.ops, res.ops
    for feed in data[:4]:
        np.testing.assert_allclose(H.tflite_run(res, feed)[0], H.ort_run(m, feed)[0], atol=1e-6)
    q = H.convert(m, "int8", samples=data[:8])
    assert q.ops.count("DEQUANTIZE") == 1, q.ops            # the lookup and the Tanh run in int8
    for feed in data[8:]:
        err = np.abs(H.tflite_run(q, feed)[0] - H.ort_run(m, feed)[0]).max() / H.output_scale(q)
        assert err <= 2.0, f"off by {err:.2f} steps"


@pytest.mark.parametrize("iota, fires", [(np.arange(K), True), (np.arange(K)[::-1], False),
                                         (np.arange(K) + 1, False)], ids=["arange", "reversed", "shifted"])
def test_only_a_comparison_with_arange_k_is_a_one_hot(iota, fires):
    graph = frontend.to_graph(one_hot_embedding(iota.reshape(1, 1, K).copy()))
    fold_constants.run(graph)
    assert onehot_gather.run(graph) is fires
    assert any(n.op == "Equal" for n in graph.nodes) is not fires
