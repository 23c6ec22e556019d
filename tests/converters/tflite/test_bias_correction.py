"""Empirical bias correction: with calibration samples, each int8 layer's bias absorbs the mean
output shift that rounding its weights causes (converters/tflite/quantize.py)."""
import numpy as np
import pytest
from examples.models import mobilenet_v2

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from converters.tflite.quantize import _rounding_shift
from tests.converters.ops import harness as H

RNG = np.random.default_rng(11)


def test_rounding_shift_is_the_output_change_on_a_constant_input():
    """On an input that is its mean everywhere, the shift is exactly W_err applied to it."""
    mean = RNG.normal(1.0, 0.5, 5)
    err = RNG.normal(0, 0.01, (4, 3, 3, 5))                                # CONV_2D [O, kH, kW, I]
    want = np.array([np.sum(err[o] * mean[None, None, :]) for o in range(4)])
    np.testing.assert_allclose(_rounding_shift("CONV_2D", err, mean), want, rtol=1e-12)
    fc = RNG.normal(0, 0.01, (4, 5))                                        # FULLY_CONNECTED [O, I]
    np.testing.assert_allclose(_rounding_shift("FULLY_CONNECTED", fc, mean), fc @ mean, rtol=1e-12)
    dw = RNG.normal(0, 0.01, (1, 3, 3, 10))                                 # multiplier 2
    want_dw = dw.sum(axis=(0, 1, 2)) * np.repeat(mean, 2)
    np.testing.assert_allclose(_rounding_shift("DEPTHWISE_CONV_2D", dw, mean), want_dw, rtol=1e-12)
    assert _rounding_shift("CONV_2D", err, mean[:4]) is None               # shapes disagree: skip


def _pointwise():
    """1x1 Conv, 64 -> 8 channels, on a positive input (as after a ReLU): large input means."""
    w = RNG.normal(0, 0.2, (8, 64, 1, 1)).astype(np.float32)
    b = RNG.normal(0, 0.1, 8).astype(np.float32)
    node = H.helper.make_node("Conv", ["x", "w", "b"], ["y"], name="pw")
    m = H.model([node], {"x": (1, 64, 6, 6)}, ["y"], {"w": w, "b": b})
    data = [{"x": RNG.uniform(0, 4, (1, 64, 6, 6)).astype(np.float32)} for _ in range(40)]
    return m, data[:20], data[20:]


def test_bias_correction_removes_the_mean_output_error():
    m, calib, held = _pointwise()
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    corrected = tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=True), samples=calib)
    plain = tflite.build(m, ranges, tflite.TFLiteOptions())                 # no samples: no correction
    assert corrected.ops == plain.ops and corrected.flatbuffer != plain.flatbuffer

    def channel_bias(result):
        errs = [H.tflite_run(result, s)[0] - H.ort_run(m, s)[0] for s in held]
        return np.abs(np.mean(errs, axis=(0, 1, 3, 4)))                   # per output channel

    assert channel_bias(corrected).sum() < 0.5 * channel_bias(plain).sum()


@pytest.fixture(scope="module")
def small_cnn():
    m = frontend.prepare(mobilenet_v2.build_small())
    rng = np.random.default_rng(5)
    data = [{"input": rng.normal(0, 1, (1, 3, 96, 96)).astype(np.float32)} for _ in range(24)]
    return m, data[:16], data[16:]


def test_bias_correction_raises_sqnr_of_a_cnn(small_cnn):
    m, calib, held = small_cnn
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])

    def sqnr(result):
        return H.sqnr_db(ref, np.concatenate([H.tflite_run(result, s)[0].ravel() for s in held]))

    corrected = sqnr(tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=True), samples=calib))
    plain = sqnr(tflite.build(m, ranges, tflite.TFLiteOptions()))
    assert corrected > plain + 0.5, (corrected, plain)


def test_layers_kept_float_are_not_corrected(small_cnn):
    """keep_float layers keep their float bias exactly (only int8 layers round their weights)."""
    m, calib, _ = small_cnn
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    a = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=1, bias_correction=True), samples=calib)
    b = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=1))
    from core.litert import make_interpreter

    def stem_bias(result):
        interp = make_interpreter(result.flatbuffer, use_xnnpack=False)
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
        conv = next(o for o in interp._get_ops_details() if o["op_name"] == "CONV_2D")
        bias = tensors[conv["inputs"][2]]
        assert bias["dtype"] == np.float32
        return interp.get_tensor(bias["index"])

    np.testing.assert_array_equal(stem_bias(a), stem_bias(b))


def test_measured_channel_means_are_the_float_activations_means():
    from converters.lower import lower
    from converters.passes import run_pipeline
    from converters.tflite import _feeds
    from converters.tflite.ranges import measure_stats
    m, calib, _ = _pointwise()
    graph = frontend.to_graph(m)
    run_pipeline(graph)
    tg = lower(graph)
    conv = next(op for op in tg.ops if op.opcode == "CONV_2D")
    x = conv.inputs[0]
    _, means = measure_stats(tg, calib, lambda s: _feeds(tg, s), frozenset({x}))
    want = np.mean([s["x"].mean(axis=(0, 2, 3)) for s in calib], axis=0)   # NCHW -> per channel
    assert set(means) == {x}
    np.testing.assert_allclose(means[x], want, rtol=1e-5)


def test_depthwise_layers_are_not_corrected():
    """group == C with 2C outputs: correcting depthwise layers cost the zoo's depthwise nets
    held-out SQNR, so their bias is the float one whether correction is on or off."""
    w = RNG.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32)
    node = H.helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1], name="dw2")
    m = H.model([node], {"x": (1, 8, 10, 10)}, ["y"], {"w": w})
    calib = [{"x": RNG.uniform(0, 3, (1, 8, 10, 10)).astype(np.float32)} for _ in range(15)]
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    on = tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=True), samples=calib)
    off = tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=False), samples=calib)
    assert "DEPTHWISE_CONV_2D" in on.ops and on.flatbuffer == off.flatbuffer


def test_transpose_conv_shift_is_spread_over_its_output():
    """TRANSPOSE_CONV [O, kH, kW, I]: every input pixel passes every tap, so an output position
    gets each tap in(H*W)/out(H*W) of the time: the CONV_2D sum times that spread."""
    mean = RNG.normal(1.0, 0.5, 5)
    err = RNG.normal(0, 0.01, (4, 3, 3, 5))
    conv = _rounding_shift("CONV_2D", err, mean)
    np.testing.assert_allclose(_rounding_shift("TRANSPOSE_CONV", err, mean, 0.25), conv * 0.25, rtol=1e-12)


def _sqnr_and_channel_bias(m, calib, held, channel_axis: int):
    """{plain | corrected: (SQNR dB on held, summed |mean error| per output channel, ops)}, in LiteRT;
    ``channel_axis`` of the model's output."""
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    ref = [H.ort_run(m, s)[0] for s in held]
    out = {}
    for name, samples in (("plain", None), ("corrected", calib)):
        result = tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=True), samples=samples)
        got = [H.tflite_run(result, s)[0] for s in held]
        err = np.stack(got) - np.stack(ref)             # [sample, *output shape]
        others = tuple(i for i in range(err.ndim) if i != channel_axis + 1)
        out[name] = (H.sqnr_db(np.concatenate([r.ravel() for r in ref]), np.concatenate([g.ravel() for g in got])),
                     np.abs(err.mean(axis=others)).sum(), result.ops)
    return out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("attrs", [{"strides": [2, 2], "pads": [1, 1, 1, 1]}, {"strides": [1, 1], "pads": [1, 1, 1, 1]},
                                   {"strides": [2, 2], "output_padding": [1, 1]}])
def test_transpose_conv_is_corrected_without_losing_sqnr(bias, attrs):
    """ReLU -> ConvTranspose (its input has large means). Without a bias the corrected layer gets
    one (TRANSPOSE_CONV's optional input), which LiteRT runs; the SQNR does not drop. Stride 1
    lowers as the equal CONV_2D (lower/conv.py), corrected the same way."""
    rng = np.random.default_rng(2)
    inits = {"w": rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32)}
    if bias:
        inits["b"] = rng.normal(0, 0.1, 8).astype(np.float32)
    nodes = [H.helper.make_node("Relu", ["x"], ["r"], name="relu"),
             H.helper.make_node("ConvTranspose", ["r", "w", "b"] if bias else ["r", "w"], ["y"], name="ct", **attrs)]
    m = H.model(nodes, {"x": (1, 16, 6, 6)}, ["y"], inits)
    data = [{"x": (1 + rng.normal(0, 1, (1, 16, 6, 6))).astype(np.float32)} for _ in range(40)]
    got = _sqnr_and_channel_bias(m, data[:20], data[20:], channel_axis=1)
    assert ("CONV_2D" if attrs["strides"] == [1, 1] else "TRANSPOSE_CONV") in got["corrected"][2]
    assert got["corrected"][0] >= got["plain"][0], got
    assert got["corrected"][1] < got["plain"][1], got


def test_matmul_is_corrected_through_its_fully_connected_bias():
    """MatMul with a constant [K, N] weight lowers to FULLY_CONNECTED, whose (zero) bias takes
    the correction like Gemm's; measured in LiteRT the SQNR does not drop."""
    rng = np.random.default_rng(4)
    nodes = [H.helper.make_node("Relu", ["x"], ["r"], name="relu"), H.helper.make_node("MatMul", ["r", "w"], ["y"])]
    m = H.model(nodes, {"x": (1, 6, 32)}, ["y"], {"w": rng.normal(0, 0.3, (32, 16)).astype(np.float32)})
    data = [{"x": (1 + rng.normal(0, 1, (1, 6, 32))).astype(np.float32)} for _ in range(60)]
    got = _sqnr_and_channel_bias(m, data[:30], data[30:], channel_axis=2)
    assert got["corrected"][2] == ["QUANTIZE", "RELU", "FULLY_CONNECTED", "DEQUANTIZE"]
    assert got["corrected"][0] >= got["plain"][0], got
    assert got["corrected"][1] < got["plain"][1], got


def test_correction_is_on_by_default_and_can_be_turned_off():
    m, calib, _ = _pointwise()
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    default = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    off = tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=False), samples=calib)
    assert default.flatbuffer == tflite.build(m, ranges, tflite.TFLiteOptions(bias_correction=True),
                                              samples=calib).flatbuffer
    assert off.flatbuffer == tflite.build(m, ranges, tflite.TFLiteOptions()).flatbuffer != default.flatbuffer
