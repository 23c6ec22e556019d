"""Binary elementwise ops with broadcasting, constants on either side, and NHWC propagation."""
import numpy as np
import pytest
from onnx import helper

from tests.converters.ops import harness as H

RNG = np.random.default_rng(3)


def c(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


CASES = {
    "add_same": ("Add", {"a": (1, 4, 5, 5), "b": (1, 4, 5, 5)}, {}, "ADD"),
    "add_bcast_const": ("Add", {"a": (1, 4, 5, 5)}, {"b": c(4, 1, 1)}, "ADD"),
    "sub_scalar": ("Sub", {"a": (2, 7)}, {"b": c()}, "SUB"),
    "mul_rowvec": ("Mul", {"a": (3, 6)}, {"b": c(6)}, "MUL"),
    "mul_two": ("Mul", {"a": (2, 3, 4), "b": (2, 3, 4)}, {}, "MUL"),
    "div_const": ("Div", {"a": (2, 6)}, {"b": c(6, low=0.5, high=2.0)}, "MUL"),
    "max_two": ("Max", {"a": (2, 6), "b": (2, 6)}, {}, "MAXIMUM"),
    "min_two": ("Min", {"a": (2, 6), "b": (2, 6)}, {}, "MINIMUM"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_binary(case):
    op, inputs, inits, opcode = CASES[case]
    H.check(H.one_node(op, inputs, inits), expect=[opcode])


def test_div_by_activation_is_a_float_island_in_int8():
    # TFLite DIV has no int8 kernel: the int8 model dequantizes around it and stays exact-ish.
    m = H.one_node("Div", {"a": (2, 6), "b": (2, 6)})
    samples = [{"a": s["a"], "b": np.abs(s["b"]) + 0.5} for s in H.samples_for(m)]
    H.check(m, expect=["DIV"], samples=samples, islands=2, steps=3)


POW = {"square": (2.0, "MUL"), "sqrt": (0.5, "SQRT"), "cube": (3.0, "POW")}


@pytest.mark.parametrize("case", POW, ids=list(POW))
def test_pow(case):
    exponent, opcode = POW[case]
    m = H.one_node("Pow", {"a": (2, 8)}, {"b": np.float32(exponent)})
    samples = [{"a": np.abs(s["a"]) + 0.1} for s in H.samples_for(m)]
    H.check(m, expect=[opcode], samples=samples, islands=1, int8=opcode != "POW")


def test_sqrt():
    m = H.one_node("Sqrt", {"a": (2, 8)})
    samples = [{"a": np.abs(s["a"]) + 0.1} for s in H.samples_for(m)]
    H.check(m, expect=["SQRT"], samples=samples, islands=1)


def test_elementwise_keeps_nhwc_between_convs():
    """Conv -> Add(const per channel) -> Mul(conv) -> Conv: no TRANSPOSE between the convs."""
    w1, w2 = c(4, 3, 3, 3), c(4, 4, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "k"], ["b"]),
             helper.make_node("Mul", ["b", "a"], ["m"]),
             helper.make_node("Conv", ["m", "w2"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"], {"w1": w1, "w2": w2, "k": c(4, 1, 1)})
    res, _ = H.check(m, steps=4)
    inner = res.ops[1:-1]
    assert "TRANSPOSE" not in inner, res.ops



def _int8_measured(m, samples):
    """int8 build with ``samples``: the ADD chain's partial sums (no ONNX tensor, two activation
    inputs: no exact interval) get measured ranges, as ``ganglion convert`` does."""
    ranges = H.collect_ranges(m, samples, method="minmax", progress=False)
    return H.tflite.build(m, ranges, H.tflite.TFLiteOptions(quantize="int8"), samples=samples)


SUM = {  # variadic Sum -> ADD chain (ADD_N has no int8 kernel)
    "one": ({"a": (2, 6)}, {}),
    "two_nchw": ({"a": (1, 4, 5, 5), "b": (1, 4, 5, 5)}, {}),
    "three_bcast": ({"a": (2, 3, 4), "b": (3, 4), "c": (2, 3, 4)}, {}),
    "four_with_const": ({"a": (1, 4, 5, 5), "b": (1, 4, 5, 5), "c": (1, 4, 5, 5)}, {"d": c(4, 1, 1)}),
}


@pytest.mark.parametrize("case", SUM, ids=list(SUM))
def test_sum(case):
    inputs, inits = SUM[case]
    n = len(inputs) + len(inits)
    m = H.one_node("Sum", inputs, inits, opset=13)
    res, _ = H.check(m, int8=False)
    assert res.ops.count("ADD") == n - 1
    samples = H.samples_for(m)
    q = _int8_measured(m, samples)
    assert q.ops.count("ADD") == n - 1 and q.ops.count("DEQUANTIZE") == 1, q.ops   # all int8
    ref, got = H.ort_run(m, samples[0])[0], H.tflite_run(q, samples[0])[0]
    # each ADD rounds once (<= 0.5 step of its output) and the input quantization adds ~0.5 step
    # per input: n steps bound the chain, a wrong scale would be tens off
    assert np.abs(got - ref).max() <= n * H.output_scale(q)


def test_sum_after_conv_stays_channels_last():
    w = RNG.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["a", "b", "a"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"], {"w": w})
    res, _ = H.check(m, int8=False)
    assert res.ops.count("TRANSPOSE") == 2       # in and out only: Sum kept NHWC
    q = _int8_measured(m, H.samples_for(m))
    assert q.ops.count("DEQUANTIZE") == 1, q.ops
