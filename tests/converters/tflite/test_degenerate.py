"""Degenerate calibration ranges (all-zero layers, dead ReLUs, outputs ~1e-14) get scales the
int8 kernels accept: the model loads in LiteRT with XNNPACK and matches onnxruntime, and a
DegenerateRangeWarning names the tensors whose range was (near-)constant."""
import warnings

import numpy as np
import pytest
from onnx import helper

from converters.tflite.check import check_flatbuffer
from converters.tflite.params import DegenerateRangeWarning
from tests.converters.ops import harness as H
from tests.converters.tflite.test_ties import run

RNG = np.random.default_rng(5)
W = RNG.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
W2 = RNG.normal(0, 0.5, (2, 4, 1, 1)).astype(np.float32)


def zero_conv():
    return [helper.make_node("Conv", ["x", "w"], ["y"])], {"w": np.zeros_like(W)}


def zero_conv_then_conv():
    return ([helper.make_node("Conv", ["x", "w"], ["z"]), helper.make_node("Relu", ["z"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"])],
            {"w": np.zeros_like(W), "w2": W2, "b2": np.array([0.5, -0.25], np.float32)})


def dead_relu_then_add():
    return ([helper.make_node("Conv", ["x", "w", "b"], ["z"]), helper.make_node("Relu", ["z"], ["r"]),
             helper.make_node("Add", ["r", "x4"], ["y"])],
            {"w": W, "b": np.full(4, -100.0, np.float32), "x4": np.full((1, 4, 8, 8), 0.5, np.float32)})


def tiny_conv():
    return [helper.make_node("Conv", ["x", "w"], ["y"])], {"w": W * np.float32(1e-14)}


def denormal_channel_conv():
    """A trained model's dead channel: weights ~1e-39 (float32 subnormals; PP-OCRv4's recognizer
    has some). Its per-channel scale, and input scale x it, must stay normal floats, or the bias
    scale cannot equal input x weight scale in float32 (LiteRT refuses the model)."""
    w = W.copy()
    w[1] = np.float32(3e-39) * np.sign(w[1])
    w[2] = np.float32(1e-43)
    bias = np.array([0.1, 0.2, -0.3, 0.0], np.float32)
    return [helper.make_node("Conv", ["x", "w", "b"], ["y"])], {"w": w, "b": bias}


def denormal_depthwise():
    w = RNG.normal(0, 0.5, (3, 1, 3, 3)).astype(np.float32)
    w[0] = np.float32(2e-40)
    return ([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=3, pads=[1, 1, 1, 1])],
            {"w": w, "b": np.array([0.5, 0.0, -0.5], np.float32)})


def tiny_mul():
    return [helper.make_node("Mul", ["x", "k"], ["y"])], {"k": np.array(1e-14, np.float32)}


CASES = [  # (graph, tensor the warning must name or None when no range is degenerate)
    (zero_conv, "y"), (zero_conv_then_conv, "r"), (dead_relu_then_add, "r"), (tiny_conv, None), (tiny_mul, None),
    (denormal_channel_conv, None), (denormal_depthwise, None),
]


@pytest.mark.parametrize("make,degenerate", CASES, ids=[c[0].__name__ for c in CASES])
def test_degenerate_ranges_load_in_xnnpack_and_match(make, degenerate):
    nodes, inits = make()
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    samples = H.samples_for(m, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = H.convert(m, "int8", samples=samples)
    found = [str(w.message) for w in caught if issubclass(w.category, DegenerateRangeWarning)]
    if degenerate is None:
        assert not found, found
    else:
        assert len(found) == 1 and f"'{degenerate}" in found[0], found   # (lowered names start with the ONNX one)
    check_flatbuffer(q.flatbuffer)
    ref = H.ort_run(m, samples[0])[0]
    for use_xnnpack in (True, False):
        got = run(q, samples[0], use_xnnpack=use_xnnpack)[0]
        scale = H.output_scale(q) or 1.0
        assert np.abs(got - ref).max() <= 3 * scale, (use_xnnpack, scale, np.abs(got - ref).max())
    if make in (tiny_conv, tiny_mul):    # ~1e-14 outputs survive: not flushed to zero
        assert np.abs(ref).max() < 1e-12 and np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99
