"""Conv/Gemm + Add(per-channel constant) folded into the op's bias (converters/passes/
fuse_bias_add.py): the float model is unchanged (LiteRT against onnxruntime), the Add is gone,
and in int8 the bias is added in the int32 accumulator before the one rounding. The graphs are
paddle2onnx's shape: a bias-less Conv, then Add(conv, Reshape(bias, [1, C, 1, 1]))."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from converters.passes import fuse_bias_add
from tests.converters.ops import harness as H

RNG = np.random.default_rng(5)


def _conv_add(bias_shape, c: int = 8):
    """Conv 4 -> c (no bias), then Add of a constant of ``bias_shape``: outputs near +24 before a
    bias near -24 (the cancellation that int8 handles badly before the Add)."""
    w = RNG.normal(0, 0.2, (c, 4, 3, 3)).astype(np.float32)
    w[:, :, 1, 1] += 3.0                                   # a large positive response ...
    bias = (-w.sum(axis=(1, 2, 3)) * 2.0).astype(np.float32)    # ... cancelled by the bias (inputs ~2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "b"], ["y"], name="bias_add")]
    b = bias.reshape(bias_shape) if np.prod(bias_shape) == c else np.float32(bias[0]).reshape(bias_shape)
    m = H.model(nodes, {"x": (1, 4, 6, 6)}, ["y"], {"w": w, "b": b})
    data = [{"x": (RNG.uniform(1.5, 2.5, (1, 4, 6, 6))).astype(np.float32)} for _ in range(24)]
    return m, data[:16], data[16:]


@pytest.mark.parametrize("bias_shape", [(1, 8, 1, 1), (8, 1, 1), (1,), ()])
def test_a_channel_constant_becomes_the_conv_bias(bias_shape):
    m, calib, held = _conv_add(bias_shape)
    res = H.convert(m, "none")
    assert "ADD" not in res.ops and res.ops.count("CONV_2D") == 1
    for s in held[:3]:
        np.testing.assert_allclose(H.tflite_run(res, s)[0], H.ort_run(m, s)[0], atol=1e-4, rtol=1e-4)


def test_a_per_position_constant_is_left_alone():
    m, _, held = _conv_add((8, 1, 1))
    per_position = RNG.normal(0, 1, (1, 8, 6, 6)).astype(np.float32)
    m.graph.initializer[1].CopyFrom(helper.make_tensor("b", 1, per_position.shape, per_position.ravel()))
    res = H.convert(m, "none")
    assert "ADD" in res.ops
    np.testing.assert_allclose(H.tflite_run(res, held[0])[0], H.ort_run(m, held[0])[0], atol=1e-4, rtol=1e-4)


def test_in_int8_the_folded_bias_is_added_before_the_rounding(monkeypatch):
    m, calib, held = _conv_add((1, 8, 1, 1))
    (folded, plain), (with_fold, without) = _int8_with_and_without(m, calib, held, monkeypatch, "run")
    assert "ADD" in plain.ops and "ADD" not in folded.ops
    # measured 33.1 vs 30.5 dB: the input's own rounding is common to both and caps the gain here
    assert with_fold - without > 1.5, (with_fold, without)


def _int8_with_and_without(m, calib, held, monkeypatch, disable: str):
    """(folded, plain) int8 results and their holdout SQNRs; plain with fuse_bias_add.<disable> off."""
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    folded = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    monkeypatch.setattr(fuse_bias_add, disable, lambda *a: False)
    plain = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])
    sqnrs = [H.sqnr_db(ref, np.concatenate([H.tflite_run(r, s)[0].ravel() for s in held])) for r in (folded, plain)]
    return (folded, plain), sqnrs


def _conv_mul_add(scale_shape):
    """A BatchNorm exported as Mul + Add after a bias-less Conv (captcha-whisperer's CRNN): the
    per-channel scales span 0.02-1, so in int8 the Conv's output is rounded to the step of its
    widest channel before the small ones are scaled down."""
    c = 8
    w = RNG.normal(0, 0.5, (c, 4, 3, 3)).astype(np.float32)
    scale = np.geomspace(0.02, 1.0, c).astype(np.float32) if np.prod(scale_shape) == c else np.float32(0.3)
    shift = RNG.normal(0, 0.2, c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = H.model(nodes, {"x": (1, 4, 6, 6)}, ["y"], {"w": w, "s": np.reshape(scale, scale_shape),
                                                    "b": shift.reshape(1, c, 1, 1)})
    data = [{"x": RNG.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)} for _ in range(24)]
    return m, data[:16], data[16:]


def test_a_scalar_scale_is_left_alone():
    m, _, held = _conv_mul_add(())
    res = H.convert(m, "none")
    assert "MUL" in res.ops
    np.testing.assert_allclose(H.tflite_run(res, held[0])[0], H.ort_run(m, held[0])[0], atol=1e-4, rtol=1e-4)


def test_a_channel_scale_folds_into_the_conv_weights(monkeypatch):
    m, calib, held = _conv_mul_add((1, 8, 1, 1))
    res = H.convert(m, "none")
    assert res.ops.count("CONV_2D") == 1 and "MUL" not in res.ops and "ADD" not in res.ops, res.ops
    for s in held[:3]:
        np.testing.assert_allclose(H.tflite_run(res, s)[0], H.ort_run(m, s)[0], atol=1e-4, rtol=1e-4)
    (folded, plain), (with_fold, without) = _int8_with_and_without(m, calib, held, monkeypatch, "_fold_scale")
    assert "MUL" in plain.ops and "MUL" not in folded.ops
    assert with_fold - without > 3.0, (with_fold, without)
