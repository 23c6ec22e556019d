"""api.convert on the example CNNs: every mode and target, run in LiteRT / onnxruntime.

The fidelity numbers come from the conversion's own holdout verification (the real LiteRT
interpreter against onnxruntime), so each test also exercises the manifest's fidelity report.
Thresholds are loose floors that a broken quantizer cannot reach (a wrong scale or layout gives
SQNR near or below 0 dB), not performance targets -- those live in bench/convert_bench.py.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters import api
from converters.config import ConvertConfig
from converters.frontend.shapes import PinnedShapeWarning
from core import artifact
from core.litert import make_interpreter
from tests.fixtures.models import random_calibration


@pytest.fixture(scope="module")
def holdout_path(tmp_path_factory, mobilenet_v2_small_path):
    path = tmp_path_factory.mktemp("holdout") / "mnv2_small_holdout.npz"
    np.savez(path, **random_calibration(mobilenet_v2_small_path, 8, seed=1))
    return path


def convert(tmp_path, model, calib, output, **kw) -> api.ConvertResult:
    return api.convert(ConvertConfig(model=model, output=tmp_path / output, calib=calib, progress=False, **kw))


def sqnr(result: api.ConvertResult, fmt: str = "tflite") -> float:
    return result.report[fmt]["outputs"]["logits"]["sqnr_db"]


def opcodes(flatbuffer: bytes) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in m.subgraphs[0].operators]


def test_mobilenet_v2_int8_gpk(tmp_path, mobilenet_v2_small_path, small_calib_path, holdout_path):
    result = convert(tmp_path, mobilenet_v2_small_path, small_calib_path, "m.gpk", holdout=holdout_path)
    art = artifact.read(tmp_path / "m.gpk")
    ops = opcodes(art.model_bytes("tflite"))
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"} <= set(ops)
    # Layout is converted once at the input: at most that one TRANSPOSE, and nothing inside.
    assert ops.count("TRANSPOSE") <= 1 and "TRANSPOSE" not in ops[2:]
    assert sqnr(result) > 15
    m = art.manifest
    assert m["quantization"]["mode"] == "int8" and m["calibration"]["method"] == "auto"
    assert m["inputs"][0]["shape"] == [1, 3, 96, 96] and m["inputs"][0]["dtype"] == "float32"


def test_resnet_tiny_int8_runs_in_litert(tmp_path, resnet_tiny_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, **random_calibration(resnet_tiny_path, 16))
    result = convert(tmp_path, resnet_tiny_path, calib, "r.tflite", holdout=calib)
    make_interpreter((tmp_path / "r.tflite").read_bytes(), num_threads=2)   # XNNPACK must accept it
    assert sqnr(result) > 15


@pytest.mark.parametrize("mode, floor_db", [("none", 60), ("float16", 35), ("dynamic", 20)])
def test_float_modes_need_no_calibration(tmp_path, mobilenet_v2_small_path, holdout_path, mode, floor_db):
    result = convert(tmp_path, mobilenet_v2_small_path, None, f"m_{mode}.tflite", quantize=mode,
                     holdout=holdout_path)
    assert sqnr(result) > floor_db


def test_target_both_writes_tflite_and_qdq(tmp_path, mobilenet_v2_small_path, small_calib_path, holdout_path):
    result = convert(tmp_path, mobilenet_v2_small_path, small_calib_path, "both.gpk", target="both",
                     holdout=holdout_path)
    art = artifact.read(tmp_path / "both.gpk")
    qdq = onnx.load_from_string(art.model_bytes("onnx"))
    assert "QuantizeLinear" in {n.op_type for n in qdq.graph.node}
    assert sqnr(result, "onnx") > 15 and sqnr(result, "tflite") > 15


def test_bare_onnx_output_is_qdq(tmp_path, digits_dir):
    convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "d.onnx")
    model = onnx.load(str(tmp_path / "d.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])


def test_keep_float_is_recorded_and_still_runs(tmp_path, digits_dir):
    result = convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "k.gpk",
                     keep_float=frozenset({"classifier"}), holdout=digits_dir / "holdout.npz")
    assert result.manifest["quantization"]["keep_float"] == ["classifier"]
    assert sqnr(result) > 20
    # The classifier really runs in float: its FULLY_CONNECTED takes float32 weights.
    assert op_weight_types(artifact.read(tmp_path / "k.gpk").model_bytes("tflite"), "FULLY_CONNECTED") == ["FLOAT32"]
    plain = convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "plain.tflite")
    assert op_weight_types((tmp_path / "plain.tflite").read_bytes(), "FULLY_CONNECTED") == ["INT8"]
    assert plain.keep_float == []


def op_weight_types(flatbuffer: bytes, opcode: str) -> list[str]:
    """The dtype of input 1 (the weights) of every ``opcode`` op."""
    from ai_edge_litert import schema_py_generated as schema
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    g = m.subgraphs[0]
    return [types[g.tensors[op.inputs[1]].type] for op in g.operators if ops[codes[op.opcodeIndex]] == opcode]


def test_auto_keep_float_keeps_the_worst_layers(tmp_path, digits_dir):
    plain = convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "p.gpk",
                    holdout=digits_dir / "holdout.npz")
    auto = convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "a.gpk",
                   auto_keep_float=1, holdout=digits_dir / "holdout.npz")
    kept = auto.manifest["quantization"]["keep_float"]
    node_names = {n.name for n in onnx.load(str(digits_dir / "digits_cnn.onnx")).graph.node}
    assert kept and set(kept) <= node_names
    # A step is taken only when the measured output SQNR improves.
    assert sqnr(auto) > sqnr(plain)


def outlier_model(path) -> None:
    """Conv -> Relu -> Mul (one channel x300) -> Conv (that channel's weights /300) -> GAP.

    Float-exact, but int8-hostile: the Mul output shares one per-tensor scale between a huge
    channel and small ones, and the second Conv's tiny weights vanish in its per-channel scale.
    """
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    scale = np.ones((1, 8, 1, 1), np.float32)
    scale[0, 0] = 300.0
    w2 = rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32)
    w2[:, 0] /= 300.0
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="relu_a"),
             helper.make_node("Mul", ["b", "scale"], ["c"], name="outlier_mul"),
             helper.make_node("Conv", ["c", "w2"], ["d"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["d"], ["e"], name="gap"),
             helper.make_node("Flatten", ["e"], ["logits"], name="flat")]
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_auto_keep_float_finds_the_quantization_point_that_breaks(tmp_path):
    model, calib = tmp_path / "outlier.onnx", tmp_path / "calib.npz"
    outlier_model(model)
    np.savez(calib, input=np.random.default_rng(1).normal(size=(32, 3, 16, 16)).astype(np.float32))
    plain = convert(tmp_path, model, calib, "p.gpk", holdout=calib)
    auto = convert(tmp_path, model, calib, "a.gpk", holdout=calib, auto_keep_float=1)
    # The per-layer ranking alone blames conv_b; keeping only conv_b float barely helps. One greedy,
    # measured step keeps conv_b together with the Mul whose int8 output crushed the small channels.
    assert sqnr(plain) < 15
    assert set(auto.keep_float) == {"conv_b", "outlier_mul"}
    assert sqnr(auto) > 40


def test_a_model_litert_refuses_is_never_written(tmp_path, resnet_tiny_path, monkeypatch):
    """The self-check loads every TFLite result in LiteRT before writing; a failure writes nothing."""
    from converters import tflite
    from converters.errors import ConvertError
    real_build = tflite.build

    def corrupting_build(*args, **kwargs):
        result = real_build(*args, **kwargs)
        result.flatbuffer = result.flatbuffer[:len(result.flatbuffer) // 2]     # a writer bug
        return result
    monkeypatch.setattr(tflite, "build", corrupting_build)
    with pytest.raises(ConvertError) as err:
        api.convert(ConvertConfig(model=resnet_tiny_path, output=tmp_path / "x.gpk", quantize="none",
                                  progress=False))
    assert err.value.code == "convert.self_check"
    assert list(tmp_path.iterdir()) == []


def test_signed_gpk_verifies_with_its_key(tmp_path, digits_dir):
    from core import keys
    private, public = keys.generate(tmp_path / "k.key")
    convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "s.gpk", key=private)
    art = artifact.read(tmp_path / "s.gpk", trusted_keys=[keys.load_public(public)])
    assert art.signed


def test_dynamic_input_shape_override(tmp_path, digits_dir):
    model = onnx.load(str(digits_dir / "digits_cnn.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param = "batch", "height"
    dynamic = tmp_path / "dyn.onnx"
    onnx.save(model, str(dynamic))
    with pytest.raises(Exception) as err:          # axis 2 cannot be guessed without data
        convert(tmp_path, dynamic, None, "x.tflite", quantize="none")
    assert "height" in str(err.value) or "axis 2" in str(err.value)
    assert not (tmp_path / "x.tflite").exists()
    convert(tmp_path, dynamic, digits_dir / "calib.npz", "y.tflite", input_shapes=(("input", (1, 1, 8, 8)),))
    interp = make_interpreter((tmp_path / "y.tflite").read_bytes())
    assert list(interp.get_input_details()[0]["shape"]) == [1, 1, 8, 8]
    # the calibration data fixes axis 2 itself (every sample is 8 x 8): pinned from it, said
    with pytest.warns(PinnedShapeWarning, match="--input-shape input=1,1,8,8"):
        result = convert(tmp_path, dynamic, digits_dir / "calib.npz", "z.gpk")
    assert result.manifest["input_shapes_from_data"] == {"input": [1, 1, 8, 8]}


def test_manifest_labels_preprocess_and_source_hash(tmp_path, digits_dir):
    result = convert(tmp_path, digits_dir / "digits_cnn.onnx", digits_dir / "calib.npz", "l.gpk",
                     labels=digits_dir / "labels.txt", preprocess='{"channels": "L", "scale": 0.0625}',
                     name="digits", version="2.1.0")
    m = artifact.read(tmp_path / "l.gpk").manifest
    assert (m["name"], m["version"]) == ("digits", "2.1.0")
    assert m["labels"] == [str(i) for i in range(10)]
    assert m["preprocessing"]["channels"] == "L" and m["preprocessing"]["scale"] == 0.0625
    assert m["source_model"]["sha256"] == artifact.sha256((digits_dir / "digits_cnn.onnx").read_bytes())
    assert m["calibration"]["source_sha256"] == artifact.sha256((digits_dir / "calib.npz").read_bytes())
    assert result.manifest["models"] == [{"format": "tflite", "file": "model.tflite"}]


def test_mobilenet_v2_224_is_the_classic_shape(mobilenet_v2_path):
    """The bench's graph: 17 inverted residual blocks, depthwise 3x3 convs, ReLU6 as Clip, 1000 classes."""
    model = onnx.load(str(mobilenet_v2_path))
    nodes = model.graph.node
    inits = {i.name: i for i in model.graph.initializer}
    depthwise = [n for n in nodes if n.op_type == "Conv"
                 and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 17
    assert sum(n.op_type == "Add" for n in nodes) == 10            # residuals where shapes allow
    assert sum(n.op_type == "BatchNormalization" for n in nodes) == 52
    clips = [n for n in nodes if n.op_type == "Clip"]
    assert clips and all(onnx.numpy_helper.to_array(inits[n.input[2]]) == 6.0 for n in clips)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert 3.4e6 < params < 3.6e6                                    # the paper's 3.4M + BN statistics
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    logits = sess.run(None, {"input": x})[0]
    assert logits.shape == (1, 1000) and 0.3 < logits.std() < 3.0   # sensibly scaled, not exploding


def test_mobilenet_v2_224_int8_has_no_transpose_inside(tmp_path, mobilenet_v2_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, **random_calibration(mobilenet_v2_path, 8))
    result = convert(tmp_path, mobilenet_v2_path, calib, "m224.tflite", holdout=calib)
    ops = opcodes((tmp_path / "m224.tflite").read_bytes())
    assert ops.count("DEPTHWISE_CONV_2D") == 17
    assert "TRANSPOSE" not in ops[2:]          # only the NCHW input's own, right after QUANTIZE
    assert sqnr(result) > 20


def test_example_scripts_write_checked_models(tmp_path):
    from examples.models import mobilenet_v2, resnet_tiny
    mobilenet_v2.main([str(tmp_path / "m.onnx"), "--size", "64", "--width", "0.5", "--classes", "7"])
    resnet_tiny.main([str(tmp_path / "r.onnx"), "--size", "32"])
    for name, out in (("m.onnx", [1, 7]), ("r.onnx", [1, 10])):
        model = onnx.load(str(tmp_path / name))
        onnx.checker.check_model(model, full_check=True)
        assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == out
    # Seeded: the same arguments give the same bytes.
    assert mobilenet_v2.build_small().SerializeToString() == mobilenet_v2.build_small().SerializeToString()


def test_two_inputs_two_outputs(tmp_path):
    """Calibration data, manifest I/O and verification follow every input and output by name."""
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["pos"], name="relu"),
             helper.make_node("Sigmoid", ["b"], ["gate"], name="sigmoid")]
    graph = helper.make_graph(nodes, "two_io",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16]) for n in ("a", "b")],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16]) for n in ("pos", "gate")])
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, a=rng.normal(size=(20, 16)).astype(np.float32), b=rng.normal(size=(20, 16)).astype(np.float32))
    result = convert(tmp_path, model, data, "two.gpk", target="both", holdout=data)
    m = result.manifest
    assert [i["name"] for i in m["inputs"]] == ["a", "b"] and [o["name"] for o in m["outputs"]] == ["pos", "gate"]
    for fmt in ("tflite", "onnx"):
        outputs = result.report[fmt]["outputs"]
        assert set(outputs) == {"pos", "gate"} and min(o["sqnr_db"] for o in outputs.values()) > 30
