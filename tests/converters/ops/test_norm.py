"""BatchNormalization (folded or Mul+Add) and LayerNormalization."""
import numpy as np
import pytest
from onnx import helper

from converters.errors import UnsupportedOpsError

from tests.converters.ops import harness as H

RNG = np.random.default_rng(4)


def bn_params(c):
    return {"g": RNG.uniform(0.5, 1.5, c).astype(np.float32), "b": RNG.normal(0, 0.2, c).astype(np.float32),
            "m": RNG.normal(0, 0.2, c).astype(np.float32), "v": RNG.uniform(0.5, 1.5, c).astype(np.float32)}


def test_bn_folds_into_conv():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], epsilon=1e-3)]
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], {"w": RNG.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32),
                                                    **bn_params(6)})
    res, _ = H.check(m, steps=3)
    assert res.ops == ["TRANSPOSE", "CONV_2D", "TRANSPOSE"]


def test_bn_folds_into_gemm():
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["z"], transB=1),
             helper.make_node("BatchNormalization", ["z", "g", "b", "m", "v"], ["y"])]
    m = H.model(nodes, {"x": (2, 8)}, ["y"], {"w": RNG.normal(0, 0.3, (5, 8)).astype(np.float32),
                                              "c": RNG.normal(0, 0.1, 5).astype(np.float32), **bn_params(5)})
    res, _ = H.check(m, steps=3)
    assert res.ops == ["FULLY_CONNECTED"]


def test_standalone_bn_becomes_mul_add():
    m = H.model([helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])],
                {"x": (1, 4, 5, 5)}, ["y"], bn_params(4))
    res, _ = H.check(m, steps=3)
    assert "MUL" in res.ops and "ADD" in res.ops


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm(axis):
    shape = (2, 3, 8)
    norm_shape = shape[axis:] if axis > 0 else shape[-1:]
    inits = {"s": RNG.uniform(0.5, 1.5, norm_shape).astype(np.float32),
             "b": RNG.normal(0, 0.1, norm_shape).astype(np.float32)}
    m = H.one_node("LayerNormalization", {"x": shape}, inits, axis=axis)
    # Without samples the backend cannot bound x - mean tightly: that part stays a float island.
    res, _ = H.check(m, expect=["RSQRT", "MEAN"], islands=3, steps=3, atol=2e-4)


def test_layer_norm_fully_int8_with_measured_ranges():
    inits = {"s": np.ones(16, np.float32), "b": np.zeros(16, np.float32)}
    m = H.one_node("LayerNormalization", {"x": (4, 16)}, inits, axis=-1)
    samples = H.samples_for(m, 16)
    ranges = H.collect_ranges(m, samples, method="minmax", progress=False)
    q = H.tflite.build(m, ranges, H.tflite.TFLiteOptions(quantize="int8"), samples=samples)
    assert q.ops.count("DEQUANTIZE") == 1, q.ops
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    # Normalized values are O(1): the int8 chain (mean, variance, rsqrt) keeps them within ~0.1.
    assert np.abs(got - ref).max() < 0.15


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 4, 9)])
def test_instance_norm(shape):
    c = shape[1]
    inits = {"s": RNG.uniform(0.5, 1.5, c).astype(np.float32), "b": RNG.normal(0, 0.1, c).astype(np.float32)}
    m = H.one_node("InstanceNormalization", {"x": shape}, inits, epsilon=1e-5)
    # Like LayerNorm, x - mean has no derived range without samples: a float island.
    res, _ = H.check(m, expect=["MEAN", "RSQRT"], islands=3, steps=3, atol=2e-4)
    assert res.ops.count("TRANSPOSE") == 2           # channels-last inside, ONNX layout at the edges


LRN = {  # size, alpha, beta, bias (AlexNet/GoogLeNet use size 5, alpha 1e-4, beta 0.75)
    "alexnet": (5, 1e-4, 0.75, 1.0),
    "size3_strong": (3, 0.5, 0.5, 2.0),
    "size1": (1, 1e-2, 0.75, 1.0),
}


@pytest.mark.parametrize("case", LRN, ids=list(LRN))
def test_lrn(case):
    size, alpha, beta, bias = LRN[case]
    m = H.one_node("LRN", {"x": (1, 8, 5, 5)}, size=size, alpha=alpha, beta=beta, bias=bias)
    # No int8 kernel in LiteRT: the int8 model runs LRN as one float island.
    res, q = H.check(m, expect=["LOCAL_RESPONSE_NORMALIZATION"], islands=1, steps=3, atol=1e-5)
    assert "LOCAL_RESPONSE_NORMALIZATION" in q.ops and "DEQUANTIZE" in q.ops


def test_lrn_even_size_is_refused():
    m = H.one_node("LRN", {"x": (1, 8, 5, 5)}, size=4)
    with pytest.raises(UnsupportedOpsError, match="even size"):
        H.convert(m)
