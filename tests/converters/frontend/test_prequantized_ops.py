"""Already-quantized ONNX, op by op: every QOperator node ONNX Runtime writes converts alone and
matches onnxruntime within its output steps; a uint8 input the model dequantizes, an IR-3 model
and a dynamic embedding lookup (see test_prequantized.py for the whole-model cases)."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from converters.carried import CarriedScaleWarning
from core.litert import make_interpreter
from tests.converters import prequant_models as pm
from tests.converters.frontend.prequant_check import save, to_tflite, run_tflite, run_ort, output_step, steps_apart, sqnr_db


# --- every QOperator op, one node each ----------------------------------------------------------------
@pytest.mark.parametrize("op, opcode, steps", [
    ("QLinearConv", "CONV_2D", 1), ("QLinearMatMul", "FULLY_CONNECTED", 1), ("QGemm", "FULLY_CONNECTED", 1),
    ("QLinearAdd", "ADD", 1), ("QLinearMul", "MUL", 1), ("QLinearSigmoid", "LOGISTIC", 1),
    ("QLinearLeakyRelu", "LEAKY_RELU", 1), ("QLinearGlobalAveragePool", "MEAN", 1),
    ("QLinearAveragePool", "AVERAGE_POOL_2D", 2), ("QLinearSoftmax", "SOFTMAX", 1),
    ("QLinearConcat", "CONCATENATION", 2)])
def test_each_qoperator_op_matches_onnxruntime(tmp_path, op, opcode, steps):
    model, shape = pm.single_qop(op)
    path = save(model, tmp_path / f"{op}.onnx")
    result, _ = to_tflite(path, tmp_path / f"{op}.tflite")
    flat = result.files["model.tflite"]
    feeds = pm.samples(shape, 20, seed=5)
    step = 1 / 256 if op == "QLinearSoftmax" else pm.Y_SCALE
    assert steps_apart(run_tflite(flat, feeds), run_ort(path, feeds), step) <= steps + 1e-4
    ops = [(o["op_name"]) for o in make_interpreter(flat)._get_ops_details()]
    assert opcode in ops and ops.count("DEQUANTIZE") == 1 and ops.count("QUANTIZE") <= 2   # int8 inside


def test_a_uint8_input_the_model_dequantizes_becomes_float_or_stays_raw_with_io_uint8(tmp_path):
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    inits = [numpy_helper.from_array(np.float32(1 / 255), "xs"), numpy_helper.from_array(np.uint8(0), "xz"),
             numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.float32(0.02), "ys"), numpy_helper.from_array(np.int8(0), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"], name="dqx"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0, name="dqw"),
             helper.make_node("Conv", ["xf", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"], name="qc"),
             helper.make_node("DequantizeLinear", ["cq", "ys"], ["y"], name="dqc")]    # no zero point: int8 from cq
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    path = save(model, tmp_path / "u8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarriedScaleWarning)
        _, carried = frontend.dequantize(frontend.load_model(path))
    assert not [n for n in carried.notes if "different scales" in n]        # the DQ without zero point agrees
    assert carried.activations["y"].zero_point == 0 and any("'x' is UINT8" in n for n in carried.notes)
    result, _ = to_tflite(path, tmp_path / "u8.tflite", io="uint8")
    interp = make_interpreter(result.files["model.tflite"])
    inp = interp.get_input_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (pytest.approx(1 / 255), 0)
    image = rng.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    interp.set_tensor(inp["index"], image)
    interp.invoke()
    out = interp.get_output_details()[0]
    got = (interp.get_tensor(out["index"]).astype(np.float32) - out["quantization"][1]) * out["quantization"][0]
    want = run_ort(path, [{"x": image}])[0]
    assert np.abs(got - want).max() <= 0.02 + 1e-6


def test_onnx_runtimes_output_of_an_ir3_model_loads(tmp_path):
    model = pm.float_cnn(concat=False)
    model.ir_version = 3                              # old exporters: every initializer is a graph input
    model.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                             for i in model.graph.initializer)
    src = save(model, tmp_path / "ir3.onnx")
    qpath = pm.ort_static(src, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    with pytest.raises(onnx.checker.ValidationError):      # scales and zero points are no graph inputs
        onnx.checker.check_model(onnx.load(str(qpath)))
    result, _ = to_tflite(qpath, tmp_path / "q.tflite")
    feeds = pm.samples(pm.CNN_SHAPE, 10, seed=9)
    assert steps_apart(run_tflite(result.files["model.tflite"], feeds), run_ort(qpath, feeds),
                       output_step(onnx.load(str(qpath)))) <= 2.0


@pytest.mark.parametrize("moved", [False, True])
def test_a_dynamic_embedding_lookup_reads_the_dequantized_table(tmp_path, moved):
    """quantize_dynamic writes Gather(int table, ids) [-> Transpose of the integers] -> DequantizeLinear:
    the lookup reads the float table (once "Add B has inconsistent type" in shape inference; the
    Transpose, as in a torch LSTM classifier's embedding, once an LSTM reading uint8)."""
    rng = np.random.default_rng(0)
    shape = [6, 1, 8] if moved else [1, 6, 8]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    inits = [numpy_helper.from_array(rng.normal(size=(50, 8)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), "pos"),
             numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w")]
    move = [helper.make_node("Transpose", ["e0"], ["e"], perm=[1, 0, 2], name="move")] if moved else []
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e0" if moved else "e"], name="lookup"), *move,
             helper.make_node("Add", ["e", "pos"], ["h"], name="add"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
    src = save(helper.make_model(helper.make_graph(nodes, "g", [ids], [y], inits),
                                 opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "f.onnx")
    dyn = pm.ort_dynamic(src, tmp_path / "dyn.onnx")
    kinds = [n.op_type for n in onnx.load(str(dyn)).graph.node]
    assert "DequantizeLinear" in kinds and kinds.index("Gather") < kinds.index("DequantizeLinear")
    assert not moved or kinds.index("Transpose") < kinds.index("DequantizeLinear")
    feeds = [{"ids": rng.integers(0, 50, size=(1, 6)).astype(np.int64)} for _ in range(16)]
    calib = tmp_path / "calib.npz"
    np.savez(calib, ids=np.concatenate([f["ids"] for f in feeds]))
    result, _ = to_tflite(dyn, tmp_path / "d.tflite", calib=calib)
    interp = make_interpreter(result.files["model.tflite"])
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    got = []
    for feed in feeds:
        interp.set_tensor(inp["index"], feed["ids"].astype(inp["dtype"]))
        interp.invoke()
        got.append(interp.get_tensor(out["index"]).copy())
    assert sqnr_db(run_ort(dyn, feeds), got) > 25
