"""Whole CNNs through the TFLite backend: layout (no TRANSPOSE inside), I/O options, fidelity."""
import numpy as np
import pytest

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from tests.converters.ops import harness as H

try:
    from examples.models import mobilenet_v2, resnet_tiny
except ImportError:  # pragma: no cover - the examples are committed with the repository
    mobilenet_v2 = resnet_tiny = None


@pytest.fixture(scope="module", params=["mobilenet_v2", "resnet_tiny"])
def cnn(request):
    module = {"mobilenet_v2": mobilenet_v2, "resnet_tiny": resnet_tiny}[request.param]
    if module is None:
        pytest.fail("examples/models is missing")
    m = frontend.prepare(module.build_small() if hasattr(module, "build_small") else module.build())
    rng = np.random.default_rng(0)
    name = m.graph.input[0].name
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    samples = [{name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(16)]
    ranges = collect_ranges(m, samples, method="minmax", progress=False)
    return request.param, m, samples, ranges


def test_float_matches_onnxruntime_and_has_no_inner_transpose(cnn):
    _, m, samples, _ = cnn
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert "TRANSPOSE" not in res.ops[1:], res.ops        # only the input edge (NCHW -> NHWC)
    assert "BATCH_NORMALIZATION" not in res.ops
    for s in samples[:2]:
        ref = H.ort_run(m, s)[0]
        np.testing.assert_allclose(H.tflite_run(res, s)[0], ref, atol=1e-3, rtol=1e-3)


def test_int8_is_fully_integer_and_close(cnn):
    name, m, samples, ranges = cnn
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8"))
    # the 3-channel NCHW input is transposed as float, then quantized (tflite/io_edges.py)
    assert q.ops[:2] == ["TRANSPOSE", "QUANTIZE"] and q.ops[-1] == "DEQUANTIZE", q.ops
    assert q.ops.count("QUANTIZE") == 1 and q.ops.count("DEQUANTIZE") == 1, q.ops
    assert "TRANSPOSE" not in q.ops[1:], q.ops
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in samples[:4]])
    got = np.concatenate([H.tflite_run(q, s)[0].ravel() for s in samples[:4]])
    # Random-weight CNNs at int8: ~30 dB on calibration-like data is typical (bench has the
    # comparison with onnxruntime's quantizer); 20 dB catches any wrong scale or layout.
    assert H.sqnr_db(ref, got) > 20


def test_nhwc_io_has_no_transpose_at_all(cnn):
    _, m, samples, ranges = cnn
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8", layout="nhwc"))
    assert "TRANSPOSE" not in q.ops
    assert q.inputs[0].layout == "nhwc" and q.inputs[0].shape[-1] == 3
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    assert H.sqnr_db(ref, got) > 20


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_integer_io(cnn, io):
    _, m, samples, ranges = cnn
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8", io=io))
    assert q.inputs[0].dtype == io and q.outputs[0].dtype == io
    assert q.inputs[0].scale > 0 and q.outputs[0].scale > 0
    if io == "int8":
        assert "DEQUANTIZE" not in q.ops and "QUANTIZE" not in q.ops
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    assert H.sqnr_db(ref, got) > 20


def test_float16_and_dynamic_modes(cnn):
    _, m, samples, _ = cnn
    f32 = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    ref = H.ort_run(m, samples[0])[0]
    for mode, min_db, max_ratio in (("float16", 50, 0.55), ("dynamic", 25, 0.4)):
        res = tflite.build(m, None, tflite.TFLiteOptions(quantize=mode))
        assert len(res.flatbuffer) < max_ratio * len(f32.flatbuffer), mode
        assert res.inputs[0].dtype == "float32"
        assert H.sqnr_db(ref, H.tflite_run(res, samples[0])[0]) > min_db, mode


def test_keep_float_keeps_named_nodes_in_float(cnn):
    _, m, samples, ranges = cnn
    conv = next(n.name for n in m.graph.node if n.op_type == "Conv")
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8", keep_float=frozenset({conv})))
    # The first Conv reads the float input: its TRANSPOSE/PAD stay float too, so the only
    # conversions are the QUANTIZE after the kept Conv and the output DEQUANTIZE.
    assert q.ops.count("DEQUANTIZE") == 1 and q.ops.count("QUANTIZE") == 1, q.ops
    assert q.ops.index("QUANTIZE") == q.ops.index("CONV_2D") + 1, q.ops
    ref = H.ort_run(m, samples[0])[0]
    assert H.sqnr_db(ref, H.tflite_run(q, samples[0])[0]) > 20
