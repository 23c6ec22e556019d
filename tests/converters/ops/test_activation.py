"""Activations, Softmax and Erf/Gelu; Clip bounds map onto the RELU family or MAXIMUM/MINIMUM."""
import numpy as np
import pytest
from onnx import helper

from tests.converters.ops import harness as H

X = {"x": (2, 3, 4, 5)}
F32 = np.float32

CASES = {
    # id: (op, inits, attrs, opcode, int8 steps, opset)
    "relu": ("Relu", {}, {}, "RELU", 2, 17),
    "sigmoid": ("Sigmoid", {}, {}, "LOGISTIC", 2, 17),
    "tanh": ("Tanh", {}, {}, "TANH", 2, 17),
    "leaky": ("LeakyRelu", {}, dict(alpha=0.1), "LEAKY_RELU", 2, 17),
    "hardswish": ("HardSwish", {}, {}, "HARD_SWISH", 2, 17),
    "hardsigmoid": ("HardSigmoid", {}, dict(alpha=0.2, beta=0.5), "ADD", 3, 17),
    "clip_relu6": ("Clip", {"lo": F32(0), "hi": F32(6)}, {}, "RELU6", 2, 17),
    "clip_n1_1": ("Clip", {"lo": F32(-1), "hi": F32(1)}, {}, "RELU_N1_TO_1", 2, 17),
    "clip_0_1": ("Clip", {"lo": F32(0), "hi": F32(1)}, {}, "RELU_0_TO_1", 3, 17),
    "clip_other": ("Clip", {"lo": F32(-0.5), "hi": F32(1.5)}, {}, "MINIMUM", 2, 17),
    "clip_min_only": ("Clip", {"lo": F32(-0.5)}, {}, "MAXIMUM", 2, 17),
    "prelu": ("PRelu", {"slope": np.array([0.1, 0.2, 0.3], F32).reshape(3, 1, 1)}, {}, "PRELU", 2, 17),
    "gelu": ("Gelu", {}, {}, "GELU", 2, 20),
    "gelu_tanh": ("Gelu", {}, dict(approximate="tanh"), "GELU", 2, 20),
    "softmax_last": ("Softmax", {}, dict(axis=-1), "SOFTMAX", 2, 17),
    "softmax_axis1": ("Softmax", {}, dict(axis=1), "SOFTMAX", 2, 17),
    "softmax_legacy": ("Softmax", {}, dict(axis=1), "SOFTMAX", 2, 11),
    "logsoftmax": ("LogSoftmax", {}, dict(axis=-1), "LOG_SOFTMAX", 2, 17),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_activation(case):
    op, inits, attrs, opcode, steps, opset = CASES[case]
    names = ["x", *inits] if op != "Clip" or "hi" in inits else ["x", "lo"]
    m = H.one_node(op, X, inits, opset=opset, input_names=names, **attrs)
    H.check(m, expect=[opcode], steps=steps, atol=2e-4)


def test_erf_float_and_int8_island():
    m = H.one_node("Erf", X)
    res, q = H.check(m, islands=2, steps=3, atol=1e-5)
    assert "EXP" in res.ops and "DIV" in res.ops


@pytest.mark.parametrize("bounds", ["min", "max", "both", "min_and_inf"])
def test_clip_by_computed_bounds(bounds):
    """Clip(x, ReduceMax(x) - 3) (power_to_db's top_db floor) and a computed max: MAXIMUM/MINIMUM;
    a constant infinite max (torch's clamp(min=t) export) is no MINIMUM."""
    hi = {"min": "", "max": "ceil", "both": "ceil", "min_and_inf": "inf"}[bounds]
    nodes = [helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
             helper.make_node("Sub", ["top", "db"], ["floor"]), helper.make_node("Add", ["top", "db"], ["ceil"]),
             helper.make_node("Clip", ["x", "floor" if bounds != "max" else "", hi], ["y"])]
    inits = {"db": F32(3.0) if bounds != "both" else F32(-0.5), "inf": F32(np.inf)}    # both: min > max
    m = H.model(nodes, X, ["y"], inits)
    res, _ = H.check(m, steps=2, samples=H.samples_for(m, low=-4.0, high=4.0))
    assert ("MAXIMUM" in res.ops) == (bounds != "max") and ("MINIMUM" in res.ops) == (hi == "ceil"), res.ops


def test_reciprocal_is_a_float_division_island():
    """Reciprocal (tf2onnx writes Rsqrt as Sqrt + Reciprocal) has no builtin: DIV(1, x)."""
    m = H.one_node("Reciprocal", X)
    res, _ = H.check(m, islands=1, steps=3, samples=H.samples_for(m, low=0.5, high=2.0))
    assert "DIV" in res.ops


def test_exported_erf_gelu_becomes_one_gelu():
    k = np.float32(np.sqrt(2.0))
    nodes = [helper.make_node("Div", ["x", "k"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    m = H.model(nodes, {"x": (2, 16)}, ["y"], {"k": k, "one": F32(1), "half": F32(0.5)})
    res, _ = H.check(m, steps=2)
    assert res.ops == ["GELU"]


def test_tanh_is_not_fused_into_conv():
    """CONV_2D ignores a fused TANH (CalculateActivationRange), so it must stay a separate op."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])]
    m = H.model(nodes, {"x": (1, 2, 5, 5)}, ["y"], {"w": rng.normal(0, 1, (3, 2, 1, 1)).astype(F32)})
    H.check(m, expect=["CONV_2D", "TANH"], steps=2)


def test_clip_with_only_max_input_opset11():
    """Clip's optional min omitted as an empty input name (opset 11 style)."""
    m = H.one_node("Clip", X, {"hi": F32(0.5)}, opset=11, input_names=["x", "", "hi"])
    H.check(m, expect=["MINIMUM"], steps=2)


def test_int8_hardswish_runs_as_add_and_muls():
    """XNNPACK has no int8 HARD_SWISH: in int8 the op is x * relu6(x + 3) / 6 (float keeps it)."""
    m = H.one_node("HardSwish", X)
    res, q = H.check(m, expect=["HARD_SWISH"], steps=2)
    assert "HARD_SWISH" not in q.ops and q.ops.count("MUL") == 2 and "ADD" in q.ops
