"""Tied int8 parameters (concat/pad/pool/resize patterns of detectors) load in LiteRT, both with
XNNPACK and with the reference kernels, and match onnxruntime; the write-time checker refuses what
LiteRT would refuse."""
import numpy as np
import pytest
from onnx import helper

from converters.tflite.check import check_flatbuffer
from converters.tflite.ties import Groups
from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(11)
STEPS = 3.0


def _w(cout, cin, k=1, gain=1.0):
    return (RNG.normal(0, 1, (cout, cin, k, k)) * gain / np.sqrt(cin * k * k)).astype(np.float32)


def _conv(x, w, out, k=1, **attrs):
    pads = [k // 2] * 4
    return helper.make_node("Conv", [x, w], [out], pads=pads, **attrs)


def branches_of_different_ranges():
    nodes = [_conv("x", "wa", "a"), _conv("x", "wb", "b"), helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    return nodes, {"wa": _w(4, 3, gain=0.05), "wb": _w(4, 3, gain=40.0)}


def sigmoid_scores_with_boxes():
    nodes = [_conv("x", "wa", "a"), helper.make_node("Sigmoid", ["a"], ["s"]), _conv("x", "wb", "b"),
             helper.make_node("Concat", ["b", "s"], ["y"], axis=1)]
    return nodes, {"wa": _w(3, 3), "wb": _w(4, 3, gain=30.0)}


def sigmoid_through_reshape_into_concat():
    """YOLO head: sigmoid scores and pixel boxes reshaped to (1, C, N), then concatenated."""
    nodes = [_conv("x", "wa", "a"), helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Reshape", ["s", "shape_s"], ["rs"]), _conv("x", "wb", "b"),
             helper.make_node("Reshape", ["b", "shape_b"], ["rb"]),
             helper.make_node("Concat", ["rb", "rs"], ["y"], axis=1)]
    return nodes, {"wa": _w(3, 3), "wb": _w(4, 3, gain=30.0), "shape_s": np.array([1, 3, 64], np.int64),
                   "shape_b": np.array([1, 4, 64], np.int64)}


def two_sigmoids():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s1"]), _conv("x", "wa", "a"),
             helper.make_node("Sigmoid", ["a"], ["s2"]), helper.make_node("Concat", ["s1", "s2"], ["y"], axis=1)]
    return nodes, {"wa": _w(3, 3, gain=0.5)}


def upsample_fpn():
    nodes = [_conv("x", "wa", "a", k=3, strides=[2, 2]),
             helper.make_node("Resize", ["a", "", "scales"], ["up"], mode="nearest"),
             _conv("x", "wb", "b", k=3), helper.make_node("Concat", ["up", "b"], ["y"], axis=1)]
    return nodes, {"wa": _w(4, 3, 3, gain=8.0), "wb": _w(4, 3, 3, gain=0.3),
                   "scales": np.array([1, 1, 2, 2], np.float32)}


def sppf():
    pool = dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    nodes = [_conv("x", "wa", "a"), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p1"], **pool), helper.make_node("MaxPool", ["p1"], ["p2"], **pool),
             helper.make_node("MaxPool", ["p2"], ["p3"], **pool),
             helper.make_node("Concat", ["r", "p1", "p2", "p3"], ["c"], axis=1), _conv("c", "wb", "y")]
    return nodes, {"wa": _w(4, 3, gain=2.0), "wb": _w(5, 16)}


def concat_of_concat():
    nodes = [_conv("x", "wa", "a"), _conv("x", "wb", "b"), _conv("x", "wc", "c"),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
             helper.make_node("Concat", ["ab", "c"], ["y"], axis=1)]
    return nodes, {"wa": _w(2, 3, gain=0.1), "wb": _w(2, 3, gain=5.0), "wc": _w(2, 3, gain=50.0)}


def one_tensor_two_concats():
    nodes = [_conv("x", "wa", "a"), _conv("x", "wb", "b"), _conv("x", "wc", "c"),
             helper.make_node("Concat", ["a", "b"], ["y0"], axis=1),
             helper.make_node("Concat", ["c", "a"], ["y1"], axis=1)]
    return nodes, {"wa": _w(2, 3), "wb": _w(2, 3, gain=20.0), "wc": _w(2, 3, gain=0.05)}


def pad_after_concat():
    nodes = [_conv("x", "wa", "a"), _conv("x", "wb", "b"), helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Pad", ["c", "pads"], ["p"]), _conv("p", "wc", "y", k=3)]
    for n in nodes[-1:]:
        del n.attribute[:]                      # VALID after the explicit pad
    return nodes, {"wa": _w(3, 3, gain=0.2), "wb": _w(3, 3, gain=10.0), "wc": _w(4, 6, 3),
                   "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}


def concat_with_constant():
    nodes = [_conv("x", "wa", "a"), helper.make_node("Concat", ["a", "grid"], ["y"], axis=1)]
    return nodes, {"wa": _w(2, 3), "grid": np.linspace(0, 60, 64, dtype=np.float32).reshape(1, 1, 8, 8)}


def shared_constant_in_two_concats():
    """One initializer in two groups of very different ranges: each use gets its own copy."""
    nodes = [_conv("x", "wa", "a"), _conv("x", "wb", "b"),
             helper.make_node("Concat", ["a", "grid"], ["y0"], axis=1),
             helper.make_node("Concat", ["grid", "b"], ["y1"], axis=1)]
    return nodes, {"wa": _w(2, 3, gain=0.1), "wb": _w(2, 3, gain=40.0),
                   "grid": np.linspace(-0.5, 0.5, 64, dtype=np.float32).reshape(1, 1, 8, 8)}


def tanh_and_sigmoid():
    """Two different fixed sources (1/128, 0 and 1/256, -128) in one CONCAT: both requantized."""
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("Concat", ["t", "s"], ["y"], axis=1)]
    return nodes, {}


def sigmoid_into_maximum():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), _conv("x", "wa", "a"),
             helper.make_node("Max", ["s", "a"], ["m"]), helper.make_node("Concat", ["m", "a"], ["y"], axis=1)]
    return nodes, {"wa": _w(3, 3, gain=3.0)}


PATTERNS = [branches_of_different_ranges, sigmoid_scores_with_boxes, sigmoid_through_reshape_into_concat,
            two_sigmoids, upsample_fpn, sppf, concat_of_concat, one_tensor_two_concats, pad_after_concat,
            concat_with_constant, shared_constant_in_two_concats, tanh_and_sigmoid, sigmoid_into_maximum]


def run(result, feeds, *, use_xnnpack: bool) -> list[np.ndarray]:
    return H.tflite_run(result, feeds, use_xnnpack=use_xnnpack)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("use_xnnpack", [True, False], ids=["xnnpack", "reference"])
def test_tied_patterns_load_and_match_onnxruntime(pattern, use_xnnpack):
    """int8 I/O: every tensor of the pattern, the outputs included, is int8 and tied."""
    nodes, inits = pattern()
    outputs = sorted({o for n in nodes for o in n.output if o.startswith("y")})
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, outputs, inits)
    samples = H.samples_for(m, 8)
    q = H.convert(m, "int8", samples=samples, io="int8")
    check_flatbuffer(q.flatbuffer)                  # the written file passes the checker too
    assert "CONCATENATION" in q.ops and "DEQUANTIZE" not in q.ops, q.ops
    refs = H.ort_run(m, samples[0])
    for i, (ref, got) in enumerate(zip(refs, run(q, samples[0], use_xnnpack=use_xnnpack))):
        scale = q.outputs[i].scale
        err = float(np.abs(got - ref).max()) / scale
        assert err <= STEPS, f"output {i} off by {err:.2f} steps of {scale:.3g}; ops {q.ops}"


@pytest.mark.parametrize("pattern", [branches_of_different_ranges, sigmoid_scores_with_boxes,
                                     sigmoid_through_reshape_into_concat], ids=lambda p: p.__name__)
def test_float_output_concat_of_far_apart_ranges_keeps_each_input_scale(pattern):
    """A CONCATENATION writing a float output from inputs of very different ranges runs float:
    the narrow input keeps its own (fine) steps instead of the wide input's."""
    nodes, inits = pattern()
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    samples = H.samples_for(m, 8)
    q = H.convert(m, "int8", samples=samples)
    check_flatbuffer(q.flatbuffer)
    ref, got = H.ort_run(m, samples[0])[0], run(q, samples[0], use_xnnpack=True)[0]
    narrow = slice(0, 4) if pattern is branches_of_different_ranges else slice(4, 7)
    ref_n, got_n = ref[:, narrow], got[:, narrow]
    steps = float(np.abs(got_n - ref_n).max()) / (float(ref_n.max() - min(ref_n.min(), 0)) / 255)
    assert steps <= STEPS, f"narrow input off by {steps:.2f} of its own steps; ops {q.ops}"


def test_fixed_source_is_requantized_not_widened():
    """Sigmoid scores joining boxes go through QUANTIZE int8 -> int8; the LOGISTIC keeps 1/256."""
    nodes, inits = sigmoid_scores_with_boxes()
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    q = H.convert(m, "int8", samples=H.samples_for(m, 8), io="int8")
    interp = make_interpreter(q.flatbuffer, use_xnnpack=False)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    logistic = next(o for o in ops if o["op_name"] == "LOGISTIC")
    assert tensors[logistic["outputs"][0]]["quantization"] == (1 / 256, -128)
    requant = [o for o in ops if o["op_name"] == "QUANTIZE" and tensors[o["inputs"][0]]["dtype"] == np.int8]
    assert [o["inputs"][0] for o in requant] == [logistic["outputs"][0]]


@pytest.mark.parametrize("seed", range(5))
def test_groups_are_the_connected_components_of_the_ties(seed):
    """Long union chains (the old path halving split them: a detector's CONCAT got two scales)."""
    rng = np.random.default_rng(seed)
    n = 60
    edges = [(int(a), int(b)) for a, b in rng.integers(0, n, (45, 2))]
    groups = Groups()
    for a, b in edges:
        groups.union(a, b)
    label = list(range(n))                       # reference: relabel to a fixed point
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            low = min(label[a], label[b])
            if label[a] != low or label[b] != low:
                label[a] = label[b] = low
                changed = True
    for a in range(n):
        for b in range(n):
            assert (groups.find(a) == groups.find(b)) == (label[a] == label[b]), (a, b)


def input_into_concat():
    nodes = [_conv("x", "wa", "a"), helper.make_node("Concat", ["x", "a"], ["y"], axis=1)]
    return nodes, {"wa": _w(3, 3, gain=2.0)}


@pytest.mark.parametrize("io", ["int8", "uint8"])
@pytest.mark.parametrize("pattern", [input_into_concat, sigmoid_scores_with_boxes], ids=lambda p: p.__name__)
def test_ties_reaching_the_graph_edges_with_integer_io(pattern, io):
    """The int8 input/output tensors are members of tie groups: their parameters are the group's."""
    nodes, inits = pattern()
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    samples = H.samples_for(m, 8)
    q = H.convert(m, "int8", samples=samples, io=io)
    check_flatbuffer(q.flatbuffer)
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    assert np.abs(got - ref).max() <= STEPS * q.outputs[0].scale
    if pattern is input_into_concat:             # the input is a member of the CONCAT's group
        assert (q.inputs[0].scale, q.inputs[0].zero_point) == (q.outputs[0].scale, q.outputs[0].zero_point)
