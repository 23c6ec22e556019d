"""The int8 parameters the writer emits follow the TFLite int8 spec, read back from the file."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.errors import ConvertError
from converters.tflite.quantize import activation_params
from converters.tflite.writer import check_params, serialize
from converters.tgraph import QParams, TGraph, TOp, TTensor
from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(7)


def details(result):
    interp = make_interpreter(result.flatbuffer, use_xnnpack=False)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    return interp, tensors, interp._get_ops_details()


def _op_io(tensors, ops, name):
    op = next(o for o in ops if o["op_name"] == name)
    return [tensors[i] for i in op["inputs"] if i >= 0], [tensors[i] for i in op["outputs"]]


def _conv_model():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"])]
    inits = {"w": RNG.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32),
             "b": RNG.normal(0, 0.1, 6).astype(np.float32),
             "wf": RNG.normal(0, 0.2, (5, 6 * 4 * 4)).astype(np.float32),
             "bf": RNG.normal(0, 0.1, 5).astype(np.float32)}
    return H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)


@pytest.fixture(scope="module")
def quantized():
    m = _conv_model()
    q = H.convert(m, "int8", samples=H.samples_for(m, 16))
    return m, q, details(q)


@pytest.mark.parametrize("opcode,axis", [("CONV_2D", 0), ("FULLY_CONNECTED", 0)])
def test_weights_per_channel_symmetric_and_bias_int32(quantized, opcode, axis):
    _, _, (_, tensors, ops) = quantized
    (x, w, b), _ = _op_io(tensors, ops, opcode)
    qp = w["quantization_parameters"]
    assert w["dtype"] == np.int8 and len(qp["scales"]) == w["shape"][axis]
    assert np.all(qp["zero_points"] == 0) and qp["quantized_dimension"] == axis
    interp = quantized[2][0]
    values = interp.get_tensor(w["index"])
    assert values.min() >= -127 and values.max() <= 127
    assert np.all(np.abs(values).max(axis=tuple(i for i in range(values.ndim) if i != axis)) == 127)
    bq = b["quantization_parameters"]
    assert b["dtype"] == np.int32 and np.all(bq["zero_points"] == 0)
    np.testing.assert_allclose(bq["scales"], x["quantization"][0] * qp["scales"], rtol=1e-6)


def test_activation_ranges_include_zero_and_fixed_softmax_params(quantized):
    m, q, (_, tensors, ops) = quantized
    _, (out,) = _op_io(tensors, ops, "SOFTMAX")
    assert out["quantization"] == (pytest.approx(1 / 256), -128)
    (x, *_), (y,) = _op_io(tensors, ops, "MAX_POOL_2D")
    assert x["quantization"] == y["quantization"]        # MAX_POOL_2D: input params == output
    (x, *_), (y,) = _op_io(tensors, ops, "CONV_2D")
    scale, zp = y["quantization"]
    assert zp == -128 and scale > 0                       # fused ReLU: range [0, max]


def test_activation_params_rule():
    q = activation_params(0.5, 2.0)                       # widened to include 0
    assert q.zero_point[0] == -128 and q.scale[0] == pytest.approx(2 / 255)
    q = activation_params(-1.0, 1.0)
    assert -1 <= q.zero_point[0] <= 0
    q = activation_params(0.0, 0.0)                       # constant zero tensor: still valid
    assert q.scale[0] > 0


def test_writer_refuses_bad_params():
    def graph(dtype, quant, data=None):
        tg = TGraph()
        x = tg.add(TTensor("x", (1, 4), "float32"))
        w = tg.add(TTensor("w", (2, 4), dtype, data=data if data is not None else np.ones((2, 4), np.int8),
                           quant=quant))
        y = tg.add(TTensor("y", (1, 2), "float32"))
        tg.ops.append(TOp("FULLY_CONNECTED", [x, w, -1], [y]))
        tg.inputs, tg.outputs = [x], [y]
        return tg

    with pytest.raises(ConvertError, match="without quantization"):
        check_params(graph("int8", None))
    with pytest.raises(ConvertError, match="zero point 0"):
        check_params(graph("int8", QParams(np.array([0.1, 0.1], np.float32), np.array([0, 3]), 0)))
    with pytest.raises(ConvertError, match="scale"):
        check_params(graph("int8", QParams.per_tensor(0.0, 0)))
    with pytest.raises(ConvertError, match="range"):
        check_params(graph("int8", QParams.per_tensor(0.1, 200)))
    ok = serialize(graph("int8", QParams(np.array([0.1, 0.2], np.float32), np.array([0, 0]), 0)))
    assert ok[4:8] == b"TFL3"


def test_int8_needs_ranges():
    m = H.one_node("Relu", {"x": (1, 4)})
    with pytest.raises(ConvertError) as err:
        tflite.build(m, None, tflite.TFLiteOptions(quantize="int8"))
    assert err.value.code == "convert.no_ranges"


def test_bad_options_are_usage_errors():
    from core.errors import UsageError
    m = H.one_node("Relu", {"x": (1, 4)})
    for opts in (dict(quantize="int4"), dict(io="int16"), dict(layout="nchw"),
                 dict(quantize="float16", io="int8")):
        with pytest.raises(UsageError):
            tflite.build(m, None, tflite.TFLiteOptions(**opts))


def test_keep_float_unknown_node_is_usage_error():
    from core.errors import UsageError
    m = H.one_node("Relu", {"x": (1, 4)})
    with pytest.raises(UsageError, match="nope"):
        tflite.build(m, {"x": (-1, 1), "y": (0, 1)}, tflite.TFLiteOptions(keep_float=frozenset({"nope"})))


def test_keep_float_by_a_fused_nodes_name():
    """Naming the Relu that was fused into the Conv keeps the fused CONV_2D float."""
    m = _conv_model()
    samples = H.samples_for(m, 8)
    ranges = H.collect_ranges(m, samples, method="minmax", progress=False)
    relu = next(n.name or f"Relu_{i}" for i, n in enumerate(m.graph.node) if n.op_type == "Relu")
    q = tflite.build(m, ranges, tflite.TFLiteOptions(keep_float=frozenset({relu})))
    _, tensors, ops = details(q)
    (x, w, _), _ = _op_io(tensors, ops, "CONV_2D")
    assert x["dtype"] == np.float32 and w["dtype"] == np.float32


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.floats(0, 1e4, allow_nan=False))
def test_activation_params_cover_the_range_and_represent_zero(lo, width):
    hi = lo + width
    q = activation_params(lo, hi)
    scale, zp = float(q.scale[0]), int(q.zero_point[0])
    assert -128 <= zp <= 127 and scale > 0    # real 0 is exactly the integer zp
    # The int8 grid spans [min(lo, 0), max(hi, 0)] up to rounding of the zero point (half a step).
    assert (-128 - zp) * scale <= min(lo, 0.0) + scale / 2 + 1e-9
    assert (127 - zp) * scale >= max(hi, 0.0) - scale / 2 - 1e-9


@pytest.mark.parametrize("bad", [(float("nan"), 1.0), (0.0, float("inf")), (2.0, 1.0)])
def test_invalid_ranges_are_reported_by_tensor(bad):
    m = H.one_node("Relu", {"x": (1, 4)})
    with pytest.raises(ConvertError) as err:
        tflite.build(m, {"x": (-1.0, 1.0), "y": bad}, tflite.TFLiteOptions(quantize="int8"))
    assert err.value.code == "convert.ranges" and "'y'" in err.value.where
