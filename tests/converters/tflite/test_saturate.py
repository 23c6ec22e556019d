"""Saturation-aware ranges (converters/tflite/saturate.py): a tensor whose every int8 reader
saturates is quantized over the part of its range the readers can tell apart. Real LiteRT int8
against onnxruntime float on single-layer graphs whose pre-activation has a wide tail."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from converters.tflite import saturate
from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(3)


def _layer(activation: str, attrs: dict | None = None):
    """Gemm 16 -> 32 then ``activation``: pre-activations mostly within +-2, one row in four
    8x larger (the tail that sets a min/max range)."""
    w = RNG.normal(0, 0.25, (32, 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
             helper.make_node(activation, ["h"], ["y"], name="act", **(attrs or {}))]
    m = H.model(nodes, {"x": (4, 16)}, ["y"], {"w": w})
    data = [{"x": (RNG.normal(0, 1, (4, 16)) * [[8], [1], [1], [1]]).astype(np.float32)}
            for _ in range(24)]
    return m, data[:16], data[16:]


def _sqnr(m, result, held):
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])
    return H.sqnr_db(ref, np.concatenate([H.tflite_run(result, s)[0].ravel() for s in held]))


def _scale_of(result, name: str) -> float:
    interp = make_interpreter(result.flatbuffer)
    return float(interp.get_tensor_details()[result.tensor_map[name]["index"]]["quantization"][0])


def _build_both(m, calib, monkeypatch):
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    narrowed = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    monkeypatch.setattr(saturate, "narrow", lambda tg, r, ops: dict(r))
    plain = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    return narrowed, plain


@pytest.mark.parametrize("activation, attrs, bound, min_gain", [
    ("Sigmoid", None, 7.0, 2.0),
    ("Tanh", None, 3.5, 2.0),
    # PyTorch's: MUL -> ADD+RELU6 -> MUL, whose two later roundings stay as they were
    ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, 3.0, 0.3),
])
def test_a_saturating_reader_narrows_its_input(activation, attrs, bound, min_gain, monkeypatch):
    m, calib, held = _layer(activation, attrs)
    narrowed, plain = _build_both(m, calib, monkeypatch)
    # the pre-activation keeps 255 steps over the bound, not over the observed tail
    assert _scale_of(narrowed, "h") <= 2 * bound / 255 * 1.01 < _scale_of(plain, "h")
    gain = _sqnr(m, narrowed, held) - _sqnr(m, plain, held)
    assert gain > min_gain, gain


def test_a_tensor_another_op_reads_in_full_keeps_its_range(monkeypatch):
    """SiLU: h feeds the sigmoid and the product, which needs all of h."""
    w = RNG.normal(0, 1.5, (32, 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
             helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
             helper.make_node("Mul", ["h", "s"], ["y"], name="silu")]
    m = H.model(nodes, {"x": (4, 16)}, ["y"], {"w": w})
    calib = [{"x": RNG.normal(0, 2, (4, 16)).astype(np.float32)} for _ in range(16)]
    narrowed, plain = _build_both(m, calib, monkeypatch)
    assert _scale_of(narrowed, "h") == _scale_of(plain, "h") > 40 / 255


def test_a_graph_output_keeps_its_range(monkeypatch):
    """h is read by the sigmoid, but the caller reads it too."""
    m, calib, _ = _layer("Sigmoid")
    m.graph.output.append(helper.make_tensor_value_info("h", 1, None))
    narrowed, plain = _build_both(m, calib, monkeypatch)
    assert _scale_of(narrowed, "h") == _scale_of(plain, "h")


def test_kept_float_readers_see_the_whole_range(monkeypatch):
    m, calib, _ = _layer("Sigmoid")
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    kept = tflite.build(m, ranges, tflite.TFLiteOptions(keep_float=frozenset({"act"})), samples=calib)
    assert _scale_of(kept, "h") > 40 / 255


def _gated(form: str):
    """Gemm 16 -> 32 (the tail as in ``_layer``) then HardSwish written out as exporters write it:
    paddle2onnx's ``Div(Mul(h, Clip(Add(h, 3), 0, 6)), 6)`` or PyTorch's (opset < 14)
    ``Mul(h, HardSigmoid(h, 1/6, 1/2))``; "other" gates h by a different tensor's relu6(g + 3)."""
    w = RNG.normal(0, 0.25, (32, 16)).astype(np.float32)
    gemm = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1)]
    consts = {"w": w, "three": np.float32(3), "zero": np.float32(0), "six": np.float32(6)}
    if form == "pytorch":
        gate = [helper.make_node("HardSigmoid", ["h"], ["g"], alpha=1 / 6, beta=0.5, name="hsig")]
        tail = [helper.make_node("Mul", ["h", "g"], ["y"], name="mul")]
    else:
        source = "h2" if form == "other" else "h"
        gate = [helper.make_node("Add", [source, "three"], ["a"], name="add3"),
                helper.make_node("Clip", ["a", "zero", "six"], ["g"], name="clip")]
        tail = [helper.make_node("Mul", ["h", "g"], ["p"], name="mul"),
                helper.make_node("Div", ["p", "six"], ["y"], name="div")]
        if form == "other":
            gemm.append(helper.make_node("Gemm", ["x", "w2"], ["h2"], name="fc2", transB=1))
            consts["w2"] = RNG.normal(0, 0.25, (32, 16)).astype(np.float32)
    m = H.model(gemm + gate + tail, {"x": (4, 16)}, ["y"], consts, opset=13)
    data = [{"x": (RNG.normal(0, 1, (4, 16)) * [[8], [1], [1], [1]]).astype(np.float32)}
            for _ in range(24)]
    return m, data[:16], data[16:]


@pytest.mark.parametrize("form", ["paddle", "pytorch"])
def test_a_product_with_its_own_relu6_gate_needs_only_values_above_minus_three(form, monkeypatch):
    """x * relu6(x + 3) is 0 wherever x <= -3: x's negative tail carries nothing (HardSwish as
    arithmetic keeps XNNPACK's int8 kernels; the HARD_SWISH op has none there)."""
    m, calib, held = _gated(form)
    narrowed, plain = _build_both(m, calib, monkeypatch)
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    lo, hi = ranges["h"]
    assert lo < -6
    assert _scale_of(narrowed, "h") == pytest.approx((hi + 3) / 255, rel=0.01)
    assert _scale_of(plain, "h") == pytest.approx((hi - lo) / 255, rel=0.01)
    gain = _sqnr(m, narrowed, held) - _sqnr(m, plain, held)
    # measured +0.77 (paddle) / +0.55 dB (pytorch): x's rounding halves, the product's stays
    assert gain > 0.4, gain


def test_a_gate_made_from_another_tensor_keeps_the_range(monkeypatch):
    m, calib, _ = _gated("other")
    narrowed, plain = _build_both(m, calib, monkeypatch)
    assert _scale_of(narrowed, "h") == _scale_of(plain, "h")
