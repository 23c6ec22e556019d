"""Comparisons, boolean logic and Where (converters/lower/logic.py) against onnxruntime, in LiteRT.

The graphs are the mask patterns exporters write: ``Where(cmp(a, b), a, b)``, torch's
``masked_fill`` (``Where(Not(mask), -inf, x)`` feeding a Softmax) and tf2onnx's negative-index wrap
of token ids before an embedding Gather (``Less`` / ``Not`` / ``Cast`` on int64 ids).
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from converters.qdq import emit
from tests.converters.ops import harness as H

COMPARE = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]
LOGIC = ["And", "Or", "Xor"]


def _where_of(cond_nodes, opset=17):
    nodes = [*cond_nodes, helper.make_node("Where", ["c", "a", "b"], ["y"])]
    return H.model(nodes, {"a": (2, 3, 8), "b": (2, 3, 8)}, ["y"], opset=opset)


def _rounded(m, seed=0):
    """Samples on a coarse grid, so that Equal sees equal values and ties are exact in int8 too."""
    return [{k: np.round(v * 2) / 2 for k, v in s.items()} for s in H.samples_for(m, seed=seed)]


@pytest.mark.parametrize("op", COMPARE)
def test_compare_then_where(op):
    m = _where_of([helper.make_node(op, ["a", "b"], ["c"])])
    H.check(m, expect=[{"Equal": "EQUAL", "Less": "LESS", "LessOrEqual": "LESS_EQUAL", "Greater": "GREATER",
                        "GreaterOrEqual": "GREATER_EQUAL"}[op], "SELECT_V2"],
            samples=_rounded(m), islands=2)


@pytest.mark.parametrize("op", LOGIC)
def test_logic_then_where(op):
    zero = numpy_helper.from_array(np.float32(0), "zero")
    nodes = [helper.make_node("Constant", [], ["z"], value=zero),
             helper.make_node("Greater", ["a", "z"], ["pa"]), helper.make_node("Less", ["b", "z"], ["nb"]),
             helper.make_node(op, ["pa", "nb"], ["c"])]
    H.check(_where_of(nodes), islands=2)


def test_masked_fill_softmax():
    """torch masked_fill(~mask, -inf) + Softmax: the masked positions get exactly 0 weight."""
    fill = numpy_helper.from_array(np.float32(-np.inf), "fill")
    nodes = [helper.make_node("Constant", [], ["f"], value=fill),
             helper.make_node("Greater", ["b", "a"], ["mask"]), helper.make_node("Not", ["mask"], ["c"]),
             helper.make_node("Where", ["c", "f", "a"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    m = H.model(nodes, {"a": (2, 3, 8), "b": (2, 3, 8)}, ["y"])
    res, _ = H.check(m, int8=False, expect=["LOGICAL_NOT", "SELECT_V2"])
    feeds = H.samples_for(m)[1]
    got = H.tflite_run(res, feeds)[0]
    assert np.all(got[feeds["b"] <= feeds["a"]] == 0)


def _ids_model():
    """tf2onnx's embedding lookup: ids < 0 ? ids + V : ids, as Less / Not / Cast / Mul / Add, then
    Gather rows of a table."""
    vocab, width = 11, 4
    table = np.random.default_rng(0).normal(size=(vocab, width)).astype(np.float32)
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.int64(vocab), "vocab")]
    nodes = [helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
             helper.make_node("Less", ["idf", "zero"], ["neg"]),
             helper.make_node("Not", ["neg"], ["pos"]),
             helper.make_node("Cast", ["neg"], ["negi"], to=TensorProto.INT64),
             helper.make_node("Cast", ["pos"], ["posi"], to=TensorProto.INT64),
             helper.make_node("Add", ["ids", "vocab"], ["wrapped"]),
             helper.make_node("Mul", ["negi", "wrapped"], ["w1"]),
             helper.make_node("Mul", ["posi", "ids"], ["w2"]),
             helper.make_node("Add", ["w1", "w2"], ["idx"]),
             helper.make_node("Gather", ["table", "idx"], ["emb"], axis=0),
             helper.make_node("Relu", ["emb"], ["y"])]
    graph = helper.make_graph(nodes, "ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return frontend.prepare(onnx.shape_inference.infer_shapes(m))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_negative_token_ids(quantize):
    m = _ids_model()
    rng = np.random.default_rng(1)
    samples = [{"ids": rng.integers(-11, 11, (1, 6)).astype(np.int64)} for _ in range(8)]
    res = H.convert(m, quantize, samples=samples)
    assert {"LESS", "LOGICAL_NOT", "GATHER"} <= set(res.ops)
    for feeds in samples:
        ref = H.ort_run(m, feeds)[0]
        got = H.tflite_run(res, feeds)[0]
        tol = 1e-5 if quantize == "none" else 2.0 * (H.output_scale(res) or 1.0)
        np.testing.assert_allclose(got, ref, atol=tol)


def _masked_attention(fill: float, layers: int = 1):
    """torch's padded attention: scores + Reshape(Where(Not(mask), fill, 0)) -> Softmax; with
    ``layers`` 2 a second layer adds the same reshaped mask to its own scores (output y1)."""
    inits = [numpy_helper.from_array(np.float32(fill), "fill"),
             numpy_helper.from_array(np.zeros((1, 6), np.float32), "zeros"),
             numpy_helper.from_array(np.array([1, 1, 1, 6], np.int64), "shape")]
    nodes = [helper.make_node("Not", ["mask"], ["pad"]),
             helper.make_node("Where", ["pad", "fill", "zeros"], ["masked"]),
             helper.make_node("Reshape", ["masked", "shape"], ["bias"]),
             helper.make_node("Add", ["scores", "bias"], ["s"]),
             helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if layers == 2:
        nodes += [helper.make_node("Add", ["y", "bias"], ["s1"]), helper.make_node("Softmax", ["s1"], ["y1"], axis=-1)]
        outputs.append(helper.make_tensor_value_info("y1", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "attn", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 6, 6]),
                        helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 6])], outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return frontend.prepare(onnx.shape_inference.infer_shapes(m))


def test_a_mask_shared_by_two_layers_is_written_back_as_valid_onnx():
    """Each layer's selection reshapes the condition itself: those nodes need their own names
    (khmersm's segmenter: its three layers' ``node_view_33/cond`` made the QDQ target fail to load)."""
    m = _masked_attention(-np.inf, layers=2)
    written, _ = emit.emit(emit.ir_graph(m), m)
    names = [n.name for n in written.graph.node]
    assert len(names) == len(set(names)), names
    feeds = {"scores": np.random.default_rng(0).normal(0, 2, (1, 2, 6, 6)).astype(np.float32),
             "mask": np.array([[True] * 4 + [False] * 2])}
    for got, ref in zip(H.ort_run(written, feeds), H.ort_run(m, feeds)):
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_padded_attention_mask_in_int8():
    """The padded keys get no attention weight in int8 too (passes/additive_mask.py): as a sum, the
    mask's int8 range was [0, 0] (the observers skip -inf) and the padded keys took a share."""
    m = _masked_attention(-np.inf)
    rng = np.random.default_rng(2)
    samples = []
    for i in range(16):
        mask = np.ones((1, 6), bool)
        mask[0, 6 - i % 4:] = False
        samples.append({"scores": rng.normal(0, 2, (1, 2, 6, 6)).astype(np.float32), "mask": mask})
    res = H.convert(m, "int8", samples=samples)
    for feeds in samples:
        ref, got = H.ort_run(m, feeds)[0], H.tflite_run(res, feeds)[0]
        assert np.abs(got - ref).max() <= 5 / 256, f"off by {np.abs(got - ref).max():.3f}"   # int8 scores
        assert np.all(got[..., ~feeds["mask"][0]] <= 1 / 256)
