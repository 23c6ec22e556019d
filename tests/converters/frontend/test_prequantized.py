"""Already-quantized ONNX models convert with their own scales, without calibration data.

Models are made at test time (tests/converters/prequant_models.py): ONNX Runtime's quantize_static
(QDQ and QOperator formats, per-channel and per-tensor weights, uint8 and int8 activations) and
quantize_dynamic applied to small float graphs, and a QAT-style QDQ export written as PyTorch's
exporter writes one. Each converted model runs in LiteRT and is compared with the quantized
model's own onnxruntime output, in output quantization steps; the scales are read back from the
TFLite tensors and must be the model's, bit for bit.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend
from converters.api import convert
from converters.carried import ActParams, CarriedScaleWarning, WeightGrid, on_grid
from converters.config import ConvertConfig
from converters.errors import ConvertError, UnsupportedOpsError
from converters.frontend import quantized
from converters.tflite.quantize import activation_params
from core import artifact
from core.litert import make_interpreter
from tests.converters import prequant_models as pm
from tests.converters.frontend.prequant_check import GANGLION, save, to_tflite, run_tflite, run_ort, tflite_quant, model_activation_params, output_step, steps_apart, sqnr_db


@pytest.fixture(scope="module")
def cnn_float(tmp_path_factory) -> Path:
    return save(pm.float_cnn(concat=False), tmp_path_factory.mktemp("pq") / "cnn.onnx")


# --- the parameters: exact round trip --------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_a_carried_range_gives_back_the_models_scale_and_zero_point_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    for scale, zp in zip(rng.uniform(1e-4, 2.0, 300).astype(np.float32), rng.integers(info.min, info.max + 1, 300)):
        p = ActParams.from_model(float(scale), int(zp), dtype)
        q = activation_params(*p.range())
        assert q.scale[0].tobytes() == np.float32(scale).tobytes()
        assert q.zero_point[0] == int(zp) - (128 if dtype == "uint8" else 0)


def test_weights_keep_their_integers_only_on_their_grid():
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (4, 9)).astype(np.int8)
    scales = rng.uniform(0.001, 0.01, 4).astype(np.float32)
    grid = WeightGrid(scales, 0, q).channels(0)
    w = (q * scales[:, None].astype(np.float64)).astype(np.float32)
    got, kept = on_grid(w, 0, grid)
    np.testing.assert_array_equal(got, q)
    assert kept.tobytes() == scales.tobytes()
    # a folded BatchNormalization multiplies each channel by one factor: same integers, scales * |k|
    k = np.array([0.5, -2.0, 1.25, 3.0])
    got, kept = on_grid((w * k[:, None]).astype(np.float32), 0, grid)
    np.testing.assert_array_equal(got, q * np.sign(k)[:, None].astype(np.int8))
    np.testing.assert_allclose(kept, scales * np.abs(k), rtol=1e-6)
    noisy = w + rng.normal(0, 1e-3, w.shape).astype(np.float32)
    assert on_grid(noisy, 0, grid) is None                         # not a grid any more
    assert on_grid(w, 1, grid) is None                             # scales along another axis
    assert WeightGrid(scales, 0, q).channels(1) is None
    edge = WeightGrid(np.float32([0.01]), None, np.int8([[-128, 127]])).channels(None)
    np.testing.assert_array_equal(on_grid(np.float32([[-1.28, 1.27]]), None, edge)[0], [[-127, 127]])


# --- ONNX Runtime's quantize_static, every format ---------------------------------------------
@pytest.mark.parametrize("fmt, per_channel, activations",
                         list(itertools.product(["QDQ", "QOperator"], [True, False], ["uint8", "int8"])))
def test_ort_static_models_convert_without_calib_and_keep_their_scales(tmp_path, cnn_float, fmt, per_channel,
                                                                       activations):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt=fmt,
                          per_channel=per_channel, activations=activations)
    qmodel = onnx.load(str(qpath))
    result, warned = to_tflite(qpath, tmp_path / "q.tflite")
    flat = result.files["model.tflite"]
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert steps_apart(run_tflite(flat, feeds), run_ort(qpath, feeds), output_step(qmodel)) <= 2.0
    assert result.manifest["calibration"] is None
    assert result.manifest["quantization"]["carried"]["form"] in ("qdq", "qdq+qoperator")
    # every activation the model quantizes and the TFLite model holds in int8: the same parameters
    want, got = model_activation_params(qmodel), tflite_quant(flat, result.manifest["tensor_map"])
    shared = sorted(set(want) & set(got))
    assert len(shared) >= 6, shared
    for name in shared:
        assert got[name][0].tobytes() == want[name][0].tobytes(), name
        assert int(got[name][1][0]) == want[name][1], name
    assert not [w for w in warned if "weights" in w]           # every weight kept its int8 values


def test_weights_keep_the_models_int8_values_and_scales(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    qmodel = onnx.load(str(qpath))
    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    result, _ = to_tflite(qpath, tmp_path / "q.tflite")
    interp = make_interpreter(result.files["model.tflite"])
    by_scales = {}
    for d in interp.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) > 1:
            by_scales[np.asarray(d["quantization_parameters"]["scales"], np.float32).tobytes()] = d["index"]
    for n in qmodel.graph.node:
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8:
            q, scale = inits[n.input[0]], inits[n.input[1]].astype(np.float32)
            stored = interp.get_tensor(by_scales[scale.tobytes()])           # the model's scales, exactly
            layout = q.transpose(0, 2, 3, 1) if q.ndim == 4 else q           # CONV_2D stores OHWI
            np.testing.assert_array_equal(stored, layout)


def test_a_concat_whose_scales_differ_is_unified_with_a_warning(tmp_path):
    src = save(pm.float_cnn(concat=True), tmp_path / "cnn.onnx")
    qpath = pm.ort_static(src, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    result, warned = to_tflite(qpath, tmp_path / "q.tflite")
    assert any("'cat' (Concat)" in w and "unified" in w for w in warned)
    assert any("'sig2' (Sigmoid" in w and "fixes the output" in w for w in warned)
    flat = result.files["model.tflite"]
    got = tflite_quant(flat, result.manifest["tensor_map"])
    tied = {got[name][0].tobytes() for name in ("cat", "m2", "p1")}
    assert len(tied) == 1                                   # bit-identical, so LiteRT accepts it
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert steps_apart(run_tflite(flat, feeds), run_ort(qpath, feeds), output_step(onnx.load(str(qpath)))) <= 2.0


def test_a_separate_batchnorm_is_folded_keeping_the_models_integer_weights(tmp_path):
    src = save(pm.float_cnn(concat=False, bn=True), tmp_path / "bn.onnx")
    qpath = pm.ort_static(src, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    qmodel = onnx.load(str(qpath))
    assert "BatchNormalization" in {n.op_type for n in qmodel.graph.node}
    result, warned = to_tflite(qpath, tmp_path / "q.tflite")
    assert not [w for w in warned if "weights" in w]
    interp = make_interpreter(result.files["model.tflite"])
    q1 = numpy_helper.to_array(next(i for i in qmodel.graph.initializer if i.name == "w1_quantized"))
    filt = next(d for d in interp.get_tensor_details() if d["dtype"] == np.int8 and d["shape"].tolist() == [8, 3, 3, 3])
    signs = np.float32([1, -1] * 4).astype(np.int8)[:, None, None, None]      # gamma's signs
    np.testing.assert_array_equal(interp.get_tensor(filt["index"]), (q1 * signs).transpose(0, 2, 3, 1))
    feeds = pm.samples(pm.CNN_SHAPE, 30, seed=9)
    ref = run_ort(src, feeds)
    # one int8 rounding fewer than ONNX Runtime's model (its Conv output before the BN): at least as close
    assert sqnr_db(ref, run_tflite(result.files["model.tflite"], feeds)) >= sqnr_db(ref, run_ort(qpath, feeds)) - 0.5


def test_a_grouped_conv_keeps_each_groups_weights(tmp_path):
    src = save(pm.grouped_cnn(), tmp_path / "g.onnx")
    qpath = pm.ort_static(src, tmp_path / "q.onnx", pm.samples((1, 3, 8, 8), 16), fmt="QDQ")
    result, warned = to_tflite(qpath, tmp_path / "q.tflite")
    assert warned == []                                     # each group found its slice of the model's grid
    feeds = pm.samples((1, 3, 8, 8), 20, seed=3)
    assert steps_apart(run_tflite(result.files["model.tflite"], feeds), run_ort(qpath, feeds),
                       output_step(onnx.load(str(qpath)))) <= 1.0


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_an_mlp_matches_onnxruntime(tmp_path, fmt):
    src = save(pm.float_mlp(), tmp_path / "mlp.onnx")
    qpath = pm.ort_static(src, tmp_path / "q.onnx", pm.samples(pm.MLP_SHAPE, 16), fmt=fmt)
    result, _ = to_tflite(qpath, tmp_path / "q.tflite")
    feeds = pm.samples(pm.MLP_SHAPE, 20, seed=9)
    assert steps_apart(run_tflite(result.files["model.tflite"], feeds), run_ort(qpath, feeds),
                       output_step(onnx.load(str(qpath)))) <= 1.0
    if fmt == "QOperator":
        assert "QLinearMatMul" in {n.op_type for n in onnx.load(str(qpath)).graph.node}


# --- QAT exports and mixed graphs ---------------------------------------------------------------
def test_a_qat_export_converts_with_its_learned_scales(tmp_path):
    path = save(pm.qat_cnn(), tmp_path / "qat.onnx")
    result, warned = to_tflite(path, tmp_path / "qat.tflite")
    assert warned == []
    flat = result.files["model.tflite"]
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert steps_apart(run_tflite(flat, feeds), run_ort(path, feeds), 0.05) <= 1.0 + 1e-6
    got = tflite_quant(flat, result.manifest["tensor_map"])
    assert got["r1"][0][0] == np.float32(0.02) and got["r1"][1][0] == -128
    assert got["gap"][0][0] == np.float32(0.01)
    # conv weights: the export's learned scales (largest |q| = 100, not 127) survive
    weights = [d for d in make_interpreter(flat).get_tensor_details()
               if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) == 8]
    learned = {numpy_helper.to_array(i).astype(np.float32).tobytes() for i in pm.qat_cnn().graph.initializer
               if i.name in ("w1_scale", "w2_scale")}
    assert {np.asarray(d["quantization_parameters"]["scales"], np.float32).tobytes() for d in weights} >= learned


def test_a_mixed_graph_keeps_the_models_float_nodes_float(tmp_path):
    path = save(pm.qat_cnn(float_tail=True), tmp_path / "mixed.onnx")
    model, carried = frontend.dequantize(frontend.load_model(path))
    assert carried.float_nodes == frozenset({"softmax"})
    result, _ = to_tflite(path, tmp_path / "mixed.tflite")
    assert "softmax" in result.keep_float
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    flat = result.files["model.tflite"]
    got, want = run_tflite(flat, feeds), run_ort(path, feeds)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) < 0.01     # logits within a step
    fixed_softmax = [d for d in make_interpreter(flat).get_tensor_details()
                     if list(d["quantization_parameters"]["scales"]) == [1 / 256]]
    assert fixed_softmax == []                             # no int8 SOFTMAX: it ran in float


def test_ort_nodes_to_exclude_stay_float(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ",
                          nodes_to_exclude=["fc"])
    result, _ = to_tflite(qpath, tmp_path / "q.tflite")
    assert "fc" in result.keep_float
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert sqnr_db(run_ort(qpath, feeds), run_tflite(result.files["model.tflite"], feeds)) > 40


# --- dynamic quantization ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamic(tmp_path_factory, cnn_float) -> Path:
    return pm.ort_dynamic(cnn_float, tmp_path_factory.mktemp("dyn") / "dyn.onnx")


def test_a_dynamic_model_without_calib_names_every_bare_tensor_in_one_error(tmp_path, dynamic):
    with pytest.raises(ConvertError) as err:
        to_tflite(dynamic, tmp_path / "d.tflite")
    assert err.value.code == "convert.prequant_ranges"
    assert "run-time" in err.value.message and "'p1'" in err.value.message
    assert "--quantize dynamic" in err.value.hint and "--calib" in err.value.hint
    assert not (tmp_path / "d.tflite").exists()


def test_a_dynamic_model_converts_to_dynamic_range_tflite_keeping_its_weights(tmp_path, dynamic):
    result, _ = to_tflite(dynamic, tmp_path / "d.tflite", quantize="dynamic")
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert sqnr_db(run_ort(dynamic, feeds), run_tflite(result.files["model.tflite"], feeds)) > 25
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(dynamic)).graph.initializer}
    stored = {np.asarray(d["quantization_parameters"]["scales"], np.float32).tobytes()
              for d in make_interpreter(result.files["model.tflite"]).get_tensor_details()
              if d["dtype"] == np.int8}
    w1 = np.full(8, inits["w1_scale"], np.float32)          # per-tensor in the model: one per channel here
    assert w1.tobytes() in stored


def test_a_dynamic_model_with_calib_becomes_full_int8(tmp_path, dynamic):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([s[pm.INPUT] for s in pm.samples(pm.CNN_SHAPE, 16)]))
    result, _ = to_tflite(dynamic, tmp_path / "d.tflite", calib=calib)
    feeds = pm.samples(pm.CNN_SHAPE, 20, seed=9)
    assert result.manifest["calibration"]["source"] == "calib.npz"
    assert sqnr_db(run_ort(dynamic, feeds), run_tflite(result.files["model.tflite"], feeds)) > 25


# --- what cannot be read -----------------------------------------------------------------------------
def test_unsupported_quantized_nodes_are_listed_in_one_error():
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.uint8), "z")
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    nodes = [helper.make_node("QLinearReduceMean", ["x", "s", "z", "s", "z"], ["a"], domain="com.microsoft", name="rm"),
             helper.make_node("QAttention", ["a"], ["b"], domain="com.microsoft", name="att"),
             helper.make_node("MatMulInteger", ["b", "w"], ["c"], name="mmi"),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT, name="cast")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [s, z, w]),
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpsError) as err:
        quantized.rewrite(model)
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 3
    assert "rm (com.microsoft.QLinearReduceMean)" in text and "att (com.microsoft.QAttention)" in text
    assert "mmi (MatMulInteger)" in text


def test_weights_that_use_minus_128_keep_their_scales_and_clamp_with_a_note(tmp_path):
    model = pm.qat_cnn()                          # torch.onnx fake-quantizes int8 weights in [-128, 127]
    w1 = next(i for i in model.graph.initializer if i.name == "w1_q")
    q = numpy_helper.to_array(w1).copy()
    q[0, 0, 0, 0] = -128
    w1.CopyFrom(numpy_helper.from_array(q, "w1_q"))
    _, carried = quantized.rewrite(model)
    assert "conv1" in carried.node_weights
    assert any("'w1'" in n and "1 value(s) of -128 become -127" in n for n in carried.notes)
    path = save(model, tmp_path / "m128.onnx")
    result, _ = to_tflite(path, tmp_path / "m128.tflite")
    interp = make_interpreter(result.files["model.tflite"])
    filt = next(d for d in interp.get_tensor_details() if d["dtype"] == np.int8 and d["shape"].tolist() == [8, 3, 3, 3])
    np.testing.assert_array_equal(interp.get_tensor(filt["index"]), np.maximum(q, -127).transpose(0, 2, 3, 1))


# --- the config, the QDQ target, the command line ------------------------------------------------
def test_calib_is_optional_only_for_quantized_models(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    assert not ConvertConfig(model=qpath, output=tmp_path / "o.gpk").needs_calibration
    assert ConvertConfig(model=qpath, output=tmp_path / "o.gpk", calib=tmp_path / "c.npz").needs_calibration
    with pytest.raises(Exception, match="calibration data"):
        ConvertConfig(model=cnn_float, output=tmp_path / "o.gpk")


def test_the_qdq_target_writes_back_the_same_scales(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    want = model_activation_params(onnx.load(str(qpath)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarriedScaleWarning)
        result = convert(ConvertConfig(model=qpath, output=tmp_path / "o.gpk", target="both",
                                       qdq_profile="onnxruntime", progress=False))
    tfl = tflite_quant(result.files["model.tflite"], result.manifest["tensor_map"])
    out = onnx.load_from_string(result.files["model.qdq.onnx"])
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    written = {n.input[0]: (np.float32(inits[n.input[1]]), int(inits[n.input[2]]) - 128)
               for n in out.graph.node if n.op_type == "QuantizeLinear"}
    shared = sorted(set(written) & set(want) & set(tfl))
    assert len(shared) >= 5
    for name in shared:
        assert written[name][0].tobytes() == want[name][0].tobytes() == tfl[name][0].tobytes(), name
        assert written[name][1] == want[name][1] == int(tfl[name][1][0]), name
    src_w = {numpy_helper.to_array(i).tobytes() for i in onnx.load(str(qpath)).graph.initializer
             if i.data_type == TensorProto.INT8}
    out_w = {v.tobytes() for v in inits.values() if v.dtype == np.int8 and v.ndim > 1}
    assert out_w and out_w <= src_w                          # the model's own int8 weights, unchanged


def test_the_tensorrt_profile_says_it_replaces_the_activation_scales(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "q.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    result, warned = to_tflite(qpath, tmp_path / "o.gpk", target="both")
    assert any("tensorrt QDQ profile" in w for w in warned)
    assert set(result.files) == {"model.tflite", "model.qdq.onnx"}


def test_cli_converts_a_qdq_model_without_calib(tmp_path, cnn_float):
    qpath = pm.ort_static(cnn_float, tmp_path / "model_qdq.onnx", pm.samples(pm.CNN_SHAPE, 16), fmt="QDQ")
    out = tmp_path / "out.gpk"
    proc = subprocess.run([str(GANGLION), "convert", str(qpath), "-o", str(out), "--json"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    art = artifact.read(out)
    assert art.manifest["quantization"]["carried"]["form"] == "qdq"
    assert art.manifest["calibration"] is None
    assert summary["outputs"][0]["name"] == "y"
    feeds = pm.samples(pm.CNN_SHAPE, 10, seed=9)
    assert steps_apart(run_tflite(art.files["model.tflite"], feeds), run_ort(qpath, feeds),
                       output_step(onnx.load(str(qpath)))) <= 2.0


def test_a_bare_tensor_of_a_static_model_is_named_and_calib_fills_it(tmp_path):
    model = pm.qat_cnn()
    kept = [n for n in model.graph.node if n.name not in ("r1_Q", "r1_DQ")]   # conv2 reads r1 unquantized
    for n in kept:
        n.input[:] = ["r1" if i == "r1_dq" else i for i in n.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    path = save(model, tmp_path / "bare.onnx")
    with pytest.raises(ConvertError) as err:
        to_tflite(path, tmp_path / "bare.tflite")
    assert err.value.code == "convert.prequant_ranges" and "'r1'" in err.value.message
    assert "--calib" in err.value.hint
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([s[pm.INPUT] for s in pm.samples(pm.CNN_SHAPE, 16)]))
    result, _ = to_tflite(path, tmp_path / "bare.tflite", calib=calib)
    got = tflite_quant(result.files["model.tflite"], result.manifest["tensor_map"])
    assert got["r2"][0][0] == np.float32(0.015)                  # the model's own scales still win
    assert {"conv1", "relu1"} <= set(result.keep_float)          # the model computes them in float


def test_tflite_build_reads_a_quantized_model_directly(tmp_path):
    from converters import tflite
    model = frontend.load_model(save(pm.qat_cnn(), tmp_path / "qat.onnx"))
    result = tflite.build(model, None, tflite.TFLiteOptions(quantize="none"))
    assert "CONV_2D" in result.ops and "QUANTIZE" not in result.ops


def test_digits_cnn_quantized_by_onnxruntime_converts_bit_exactly(tmp_path, digits_dir):
    calib = np.load(digits_dir / "calib.npz")["input"][:100]
    holdout = np.load(digits_dir / "holdout.npz")["input"]
    labels = np.load(digits_dir / "holdout_labels.npy")
    qpath = tmp_path / "digits_qdq.onnx"
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    quantize_static(str(digits_dir / "digits_cnn.onnx"), str(qpath), pm._Reader([{"input": x[None]} for x in calib]),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8)
    result, _ = to_tflite(qpath, tmp_path / "digits.tflite")
    interp = make_interpreter(result.files["model.tflite"])
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    sess = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    got, want = [], []
    for x in holdout:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        got.append(interp.get_tensor(out["index"]).copy())
        want.append(sess.run(None, {"input": x[None]})[0])
    got, want = np.concatenate(got), np.concatenate(want)
    step = output_step(onnx.load(str(qpath)), "logits")
    assert np.abs(got - want).max() <= 1.0 * step + 1e-6           # measured: 0 steps on all 450
    assert np.mean(got.argmax(1) == labels) >= np.mean(want.argmax(1) == labels) - 0.005
