"""Dynamically quantized ONNX models (every form ``quantize_dynamic`` has written) convert to int8.

Sources: ONNX Runtime's own ``quantize_dynamic`` of small float graphs (ConvInteger, MatMulInteger,
DynamicQuantizeLSTM; a GRU it leaves float), the older forms written by hand as the 2020 quantizer
wrote them (run-time int32 bias, as in ddddocr's common_old.onnx; activation scales computed by a
ReduceMin/ReduceMax chain) and the fused DynamicQuantizeMatMul / MatMulIntegerToFloat
(tests/converters/dynamic_models.py). Each is converted with calibration data and run in LiteRT
against onnxruntime running the quantized model; the float graph the reader makes is checked op
by op, and what cannot be read is refused with the node and the reason.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from converters.errors import UnsupportedOpsError
from converters.frontend import qdynamic, quantized
from core.litert import make_interpreter
from tests.converters import dynamic_models as dm
from tests.converters import prequant_models as pm
from tests.converters.frontend.prequant_check import run_ort, save, sqnr_db, to_tflite

# name: (float source, input shape, quantize_dynamic arguments, the op it must write)
ORT_CASES = {
    "cnn-int8": (lambda: pm.float_cnn(concat=False), pm.CNN_SHAPE, {}, "ConvInteger"),
    "cnn-uint8": (lambda: pm.float_cnn(concat=False), pm.CNN_SHAPE, {"weight_type": QuantType.QUInt8},
                  "ConvInteger"),
    "mlp-per-channel": (pm.float_mlp, pm.MLP_SHAPE, {"per_channel": True}, "MatMulInteger"),
    "lstm-forward": (lambda: dm.float_rnn("LSTM"), dm.RNN_SHAPE, {}, "DynamicQuantizeLSTM"),
    "lstm-bidirectional-per-channel": (lambda: dm.float_rnn("LSTM", "bidirectional"), dm.RNN_SHAPE,
                                       {"per_channel": True}, "DynamicQuantizeLSTM"),
    "lstm-reverse-uint8": (lambda: dm.float_rnn("LSTM", "reverse"), dm.RNN_SHAPE,
                           {"weight_type": QuantType.QUInt8}, "DynamicQuantizeLSTM"),
    "gru-stays-float": (lambda: dm.float_rnn("GRU", "bidirectional"), dm.RNN_SHAPE, {}, "MatMulInteger"),
    "activation-matmul": (dm.float_scores, dm.SCORES_SHAPE, {"extra_options": {"MatMulConstBOnly": False}},
                          "MatMulInteger"),
}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "QuantizeLinear",
               "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Cast", "Floor", "Div"}


def run_litert(flat: bytes, feeds: list[dict]) -> list[np.ndarray]:
    interp = make_interpreter(flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for feed in feeds:
        interp.set_tensor(inp["index"], next(iter(feed.values())).astype(inp["dtype"]))
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).copy())
    return outputs


def sqnr_after_conversion(model_path, make_samples, tmp_path) -> float:
    """SQNR (dB) of ``model_path`` converted to int8 (16 calibration samples) and run in LiteRT,
    against onnxruntime running ``model_path`` itself."""
    calib, samples = tmp_path / "calib.npz", make_samples(16)
    np.savez(calib, **{name: np.stack([s[name] for s in samples]) for name in samples[0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = to_tflite(model_path, tmp_path / f"{model_path.stem}.tflite", calib=calib)
    feeds = make_samples(12, seed=9)
    return sqnr_db(run_ort(model_path, feeds), run_litert(result.files["model.tflite"], feeds))


def converts_as_well_as(quantized_path, float_path, make_samples, tmp_path) -> None:
    """The quantized model converts as faithfully as the float model it stands for: full int8 on
    these small random-weight graphs is 15-35 dB from float (an MLP's last layer is the weakest),
    so the bar is the float source's own figure (1 dB of slack), capped at 25 dB."""
    ours = sqnr_after_conversion(quantized_path, make_samples, tmp_path)
    reference = sqnr_after_conversion(float_path, make_samples, tmp_path)
    assert ours > min(25.0, reference - 1.0), (ours, reference)


def floats(shape):
    return lambda count, seed=1: dm.samples(shape, count, seed)


def rewritten(model: onnx.ModelProto, tmp_path):
    """The float graph the reader makes of a hand-written model (its float source)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save(quantized.rewrite(model)[0], tmp_path / "float.onnx")


def float_ops(model: onnx.ModelProto) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [n.op_type for n in quantized.rewrite(model)[0].graph.node]


@pytest.mark.parametrize("case", list(ORT_CASES))
def test_quantize_dynamic_output_converts_to_int8(case, tmp_path):
    make, shape, kwargs, op = ORT_CASES[case]
    src, dst = save(make(), tmp_path / "f.onnx"), tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(dst), **{"weight_type": QuantType.QInt8, **kwargs})
    model = onnx.load(str(dst))
    assert op in {n.op_type for n in model.graph.node}
    assert not INTEGER_OPS & set(float_ops(model))
    converts_as_well_as(dst, src, floats(shape), tmp_path)


# (activation quantizer, bias, weights); the first is common_old.onnx's form
OLD_FORMS = [("dql", "int32", "uint8"), ("uint8", "int32", "uint8"), ("int8", "float", "int8"),
             ("dql", "float", "uint8"), ("static", "float", "int8")]


@pytest.mark.parametrize("form, bias, weights", OLD_FORMS)
def test_older_quantize_dynamic_forms_convert(form, bias, weights, tmp_path):
    model = dm.old_form(form, bias, weights)
    assert float_ops(model) == ["Conv", "Sigmoid", "Mul", "Conv", "Flatten", "MatMul", "Add"]
    converts_as_well_as(save(model, tmp_path / "q.onnx"), rewritten(model, tmp_path), floats(dm.OLD_SHAPE), tmp_path)


def test_a_run_time_int32_bias_becomes_the_float_convs_bias():
    """common_old.onnx's form: Cast(int32, Floor(b / (x_scale * w_scale))) added to the accumulator."""
    model = dm.old_form("dql", "int32", "uint8")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    floats, _ = quantized.rewrite(model)
    values = {i.name: numpy_helper.to_array(i) for i in floats.graph.initializer}
    convs = [n for n in floats.graph.node if n.op_type == "Conv"]
    assert [len(n.input) for n in convs] == [3, 3]
    np.testing.assert_array_equal(values[convs[0].input[2]], inits["c1_b"])
    wq, ws, wz = inits["c1_wq"], inits["c1_ws"], inits["c1_wz"]
    np.testing.assert_allclose(values[convs[0].input[1]], (wq.astype(np.float64) - wz) * ws, rtol=1e-6)


def test_fused_dynamic_matmuls_convert(tmp_path):
    model = dm.fused_matmuls()
    assert float_ops(model) == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    converts_as_well_as(save(model, tmp_path / "q.onnx"), rewritten(model, tmp_path), floats(dm.FUSED_SHAPE), tmp_path)


@pytest.mark.parametrize("moved", [False, True])
def test_an_embedding_lookup_read_by_a_matmul_integer_converts(moved, tmp_path):
    """quantize_dynamic feeds Gather(int8 table) [-> Transpose] straight to MatMulInteger, the table's
    scale in the rescale product: the lookup reads a float table."""
    src, dst = save(dm.float_lookup(moved), tmp_path / "f.onnx"), tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    kinds = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert "MatMulInteger" in kinds and "DequantizeLinear" not in kinds
    assert float_ops(onnx.load(str(dst))) == ["Gather", *(["Transpose"] if moved else []), "MatMul"]
    converts_as_well_as(dst, src, dm.id_samples, tmp_path)


def test_the_qdq_target_of_a_dynamic_model_runs_and_warns_of_no_scales_it_has_not(tmp_path):
    """common_old.onnx's form to QDQ (tensorrt profile): no activation scales are carried, so none are
    said to be replaced; the QDQ model runs in onnxruntime close to the quantized model."""
    qpath, calib = save(dm.old_form("dql", "int32", "uint8"), tmp_path / "q.onnx"), tmp_path / "calib.npz"
    np.savez(calib, x=np.stack([s[dm.INPUT] for s in dm.samples(dm.OLD_SHAPE, 16)]))
    result, warned = to_tflite(qpath, tmp_path / "o.gpk", calib=calib, target="both")
    assert not any("tensorrt QDQ profile" in w for w in warned)
    qdq = tmp_path / "qdq.onnx"
    qdq.write_bytes(result.files["model.qdq.onnx"])
    feeds = dm.samples(dm.OLD_SHAPE, 12, seed=9)
    assert sqnr_db(run_ort(qpath, feeds), run_ort(qdq, feeds)) > 20


@pytest.mark.parametrize("make, ops", [
    (lambda: dm.old_form("dql", "int32", "uint8"), ["Conv", "Sigmoid", "Mul", "Conv", "Flatten", "Gemm"]),
    (dm.fused_matmuls, ["Gemm", "Relu", "Gemm"]),
    (lambda: dm.fused_matmuls(rows=4), ["MatMul", "Add", "Relu", "MatMul", "Add"]),    # a Gemm takes 2-D only
])
def test_a_gemm_the_quantizer_split_is_one_gemm_again(make, ops):
    """quantize_dynamic writes Gemm as MatMulInteger + Add(bias): with a 2-D input it is read back as
    a Gemm (its bias in int32 in FULLY_CONNECTED, not an int8 ADD)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = quantized.dequantize(make())
    assert [n.op_type for n in model.graph.node] == ops


def test_dynamic_lstm_weights_go_back_to_onnx_layout():
    q = np.arange(2 * 3 * 8, dtype=np.int64).reshape(2, 3, 8).astype(np.int8)     # [D, input, 4H]
    per_direction = qdynamic.lstm_weights(q, np.float32([0.5, 2.0]), np.int8([1, 0]))
    np.testing.assert_array_equal(per_direction[1], (q[1].astype(np.float32) * 2.0).T)
    np.testing.assert_array_equal(per_direction[0], ((q[0].astype(np.float32) - 1) * 0.5).T)
    rows = np.arange(16, dtype=np.float32).reshape(2, 8) + 1
    per_row = qdynamic.lstm_weights(q, rows, None)
    np.testing.assert_array_equal(per_row[1, 5], q[1, :, 5] * rows[1, 5])
    assert qdynamic.lstm_weights(q, np.ones(3, np.float32), None) is None


# --- what is refused --------------------------------------------------------------------------
def _dql_conv(tail: list, extra_outputs=()) -> onnx.ModelProto:
    """x -> DynamicQuantizeLinear -> ConvInteger -> ``tail`` (reads 'acc', 'xs', 'ws'; writes 'y')."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w")
    ws = numpy_helper.from_array(np.float32(0.1), "ws")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("ConvInteger", ["xq", "w", "xz"], ["acc"], name="conv"), *tail]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", *extra_outputs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              outputs, [w, ws])
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _rescaled(*tail) -> list:
    return [helper.make_node("Cast", ["acc"], ["f"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Mul", ["xs", "ws"], ["s"], name="scales"),
            helper.make_node("Mul", ["f", "s"], ["c"], name="rescale"), *tail]


REFUSALS = {
    "no cast": (_dql_conv([helper.make_node("Relu", ["acc"], ["y"], name="relu")]), "conv (ConvInteger)",
                "no Cast to float"),
    "no rescale": (_dql_conv([helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT, name="cast")]),
                   "conv (ConvInteger)", "not multiplied by input_scale * weight_scale"),
    "scale read elsewhere": (_dql_conv(_rescaled(helper.make_node("Mul", ["c", "xs"], ["y"], name="leak"))),
                             "leak (Mul)", "reads 'xs', a value computed from run-time quantization scales"),
    "scale as output": (_dql_conv(_rescaled(helper.make_node("Relu", ["c"], ["y"], name="relu")), ["s"]),
                        "graph output 's'", "computed from run-time quantization scales"),
    "QAttention": (_dql_conv(_rescaled(helper.make_node("QAttention", ["c"], ["y"], domain="com.microsoft",
                                                        name="att"))),
                   "att (com.microsoft.QAttention)", "fused Attention"),
    "LSTM on computed weights": (_dql_conv(_rescaled(helper.make_node(
        "DynamicQuantizeLSTM", ["c", "c", "w", "", "", "", "", "", "ws", "", "ws", ""], ["y"], hidden_size=2,
        domain="com.microsoft", name="lstm"))), "lstm (DynamicQuantizeLSTM)", "W and its scale must be constant"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_cannot_be_read_is_refused_by_node_and_reason(case):
    model, where, reason = REFUSALS[case]
    with pytest.raises(UnsupportedOpsError) as err:
        quantized.rewrite(model)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(where) and reason in err.value.problems[0]
