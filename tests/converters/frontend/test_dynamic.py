"""Data-dependent shapes are refused once, naming the nodes and where to cut; a quirk on a tensor
of unknown shape is a reported problem, never a crash."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from converters import frontend, tflite
from converters.errors import DataDependentError, UnsupportedOpsError
from tests.converters.frontend.graphs import I64, const, model

NONE = tflite.TFLiteOptions(quantize="none")


def detector_tail(kind: str):
    """Scores [1, 16] from a MatMul, then post-processing of the ``kind`` given."""
    inits = [const("w", np.ones((4, 16), np.float32)), const("thr", np.float32(0.5)),
             const("three", np.array([3], I64)), const("zero", np.array(0, I64)),
             const("boxes", np.zeros((1, 16, 4), np.float32)), const("keep", np.array([5], I64))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="head")]
    if kind == "nonzero":   # score filtering, then TopK on what survived
        nodes += [helper.make_node("Greater", ["scores", "thr"], ["hit"]),
                  helper.make_node("NonZero", ["hit"], ["idx"], name="filter"),
                  helper.make_node("Gather", ["idx", "zero"], ["rows"], axis=0),
                  helper.make_node("Gather", ["scores", "rows"], ["kept"], axis=1),
                  helper.make_node("TopK", ["kept", "three"], ["y", "yi"], name="best")]
    elif kind == "topk_k":  # K computed from data
        nodes += [helper.make_node("ReduceMax", ["scores"], ["m"], keepdims=0),
                  helper.make_node("Cast", ["m"], ["mi"], to=TensorProto.INT64),
                  helper.make_node("Unsqueeze", ["mi", "zero1"], ["k"]),
                  helper.make_node("TopK", ["scores", "k"], ["y", "yi"], name="best")]
        inits.append(const("zero1", np.array([0], I64)))
    else:                    # NonMaxSuppression
        nodes += [helper.make_node("Unsqueeze", ["scores", "zero1"], ["s3"]),
                  helper.make_node("NonMaxSuppression", ["boxes", "s3", "keep"], ["sel"], name="nms"),
                  helper.make_node("Cast", ["sel"], ["y"], to=TensorProto.FLOAT)]
        inits.append(const("zero1", np.array([0], I64)))
    dims = ["n", 3] if kind == "nms" else [1, "k"]
    return model(nodes, {"x": ["N", 4]}, {"y": dims}, inits, opset=13)


@pytest.mark.parametrize("kind, root, cut", [("nonzero", "NonZero 'filter'", "'scores'"),
                                             ("topk_k", "TopK 'best'", "'scores'"),
                                             ("nms", "NonMaxSuppression 'nms'", "'s3'")])
def test_post_processing_is_one_refusal_naming_the_nodes(kind, root, cut):
    with pytest.raises(DataDependentError) as err:
        tflite.build(frontend.prepare(detector_tail(kind), {"x": [1, 4]}), None, NONE)
    e = err.value
    assert e.code == "convert.data_dependent" and isinstance(e, UnsupportedOpsError)
    assert any(p.startswith(root) for p in e.problems), e.problems
    assert "post-processing" in e.hint and cut in e.hint   # the last static tensor before it
    if kind == "nonzero":   # the nodes after the filter are summarized on one line, not one each
        assert e.problems[-1].startswith("4 more node(s) of the same post-processing")
        assert "TopK 'best'" in e.problems[-1] and "Greater" in e.problems[-1]   # the filter too
        assert not any(p.startswith(("Gather", "TopK")) for p in e.problems)


def test_slice_of_an_unknown_shape_is_reported_not_a_crash():
    """A Slice after a custom op (no shape inference) used to raise a raw TypeError."""
    inits = [const("s", np.array([0], I64)), const("e", np.array([2], I64)), const("a", np.array([1], I64))]
    nodes = [helper.make_node("Mystery", ["x"], ["m"], domain="vendor.ops", name="mystery"),
             helper.make_node("Slice", ["m", "s", "e", "a"], ["y"], name="cut")]
    m = model(nodes, {"x": [1, 4]}, {"y": [1, "k"]}, inits, opset=17, domains={"vendor.ops": 1})
    with pytest.raises(UnsupportedOpsError) as err:
        tflite.build(frontend.prepare(m, {}), None, NONE)
    text = "\n".join(err.value.problems)
    assert "Mystery 'mystery'" in text and "Slice 'cut': no static shape for m" in text


def test_per_class_filtering_is_grouped_and_cut_at_the_scores():
    """A detector filters each class alone: one line per op and reason, and the cut tensors
    collapse from the 5 per-class slices to the one score tensor they were taken from."""
    inits = [const("w", np.ones((4, 5), np.float32)), const("thr", np.float32(0.5))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="head")]
    for c in range(5):
        inits.append(const(f"c{c}", np.array(c, I64)))
        nodes += [helper.make_node("Gather", ["scores", f"c{c}"], [f"s{c}"], axis=1),
                  helper.make_node("Greater", [f"s{c}", "thr"], [f"hit{c}"]),
                  helper.make_node("NonZero", [f"hit{c}"], [f"idx{c}"], name=f"filter{c}")]
    nodes += [helper.make_node("Concat", [f"idx{c}" for c in range(5)], ["all"], axis=1),
              helper.make_node("Cast", ["all"], ["y"], to=TensorProto.FLOAT)]
    m = model(nodes, {"x": [1, 4]}, {"y": [1, "k"]}, inits, opset=13)
    with pytest.raises(DataDependentError) as err:
        tflite.build(frontend.prepare(m, {}), None, NONE)
    e = err.value
    assert e.problems[0] == "NonZero x5 ('filter0', 'filter1', 'filter2' and 2 more): " \
                            "its output size is the number of non-zero values"
    assert "before it are 'scores':" in e.hint


def _if_on_sr(path: str):
    """silero VAD's shape: a branch per sample rate, chosen by ``sr`` (0-d int64) directly or
    through value glue (its opset-18 export: Reshape -> Gather -> Equal -> If)."""
    then = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    inits = [const("two", np.float32(2)), const("rate", np.array(16000, I64)),
             const("flat", np.array([1], I64)), const("first", np.array(0, I64))]
    if path == "direct":
        nodes = [helper.make_node("Equal", ["sr", "rate"], ["is16"])]
    else:
        nodes = [helper.make_node("Reshape", ["sr", "flat"], ["r"]),
                 helper.make_node("Gather", ["r", "first"], ["g"], axis=0),
                 helper.make_node("Equal", ["g", "rate"], ["is16"])]
    nodes.append(helper.make_node("If", ["is16"], ["y"], then_branch=then, else_branch=other, name="by_rate"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                       helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("path", ["direct", "through_reshape_gather"])
def test_an_if_on_a_sample_rate_input_hints_input_value_not_post_processing(path):
    with pytest.raises(DataDependentError) as err:
        tflite.build(frontend.prepare(_if_on_sr(path)), None, NONE)
    assert "--input-value sr=VALUE" in err.value.hint and "post-processing" not in err.value.hint, err.value.hint
