"""inspect: .tflite (from the real converter), QDQ .onnx, .gpk, and files that are not models."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from converters import inspect as inspector
from converters import qdq, tflite
from converters.calibrate import collect_ranges
from core import artifact
from core.errors import ArtifactError, InputError


@pytest.fixture(scope="module")
def built(digits_dir, tmp_path_factory):
    from converters import frontend
    model = frontend.load_model(digits_dir / "digits_cnn.onnx")
    calib = np.load(digits_dir / "calib.npz")["input"][:50]
    ranges = collect_ranges(model, [{"input": x[None]} for x in calib], progress=False)
    result = tflite.build(model, ranges, tflite.TFLiteOptions())
    q = qdq.build(model, ranges, profile="onnxruntime").SerializeToString()
    folder = tmp_path_factory.mktemp("inspect")
    (folder / "m.tflite").write_bytes(result.flatbuffer)
    (folder / "m.qdq.onnx").write_bytes(q)
    manifest = {"name": "digits", "version": "1.2.0", "tensor_map": result.tensor_map,
                "inputs": [{"name": "input", "dtype": "int8", "shape": [1, 1, 8, 8], "layout": "onnx",
                            "quant": {"scale": 0.5, "zero_point": -3}}],
                "source_model": {"file": "d.onnx", "sha256": "ab" * 32},
                "models": [{"format": "tflite", "file": "model.tflite"}, {"format": "onnx", "file": "model.qdq.onnx"}],
                "fidelity": {"tflite": {"candidate": "tflite", "samples": 9,
                                        "outputs": {"logits": {"sqnr_db": 33.3, "top1_agreement": 1.0}}}}}
    artifact.write(folder / "m.gpk", manifest, {"model.tflite": result.flatbuffer, "model.qdq.onnx": q})
    return folder, result


def test_tflite_ops_tensors_quant_params_and_sizes(built):
    folder, result = built
    info = inspector.inspect(folder / "m.tflite")
    sg = info["subgraphs"][0]
    assert info["format"] == "tflite" and info["size_bytes"] == len(result.flatbuffer)
    assert sg["ops"] == result.ops                              # same opcodes the converter emitted
    assert sg["op_counts"]["CONV_2D"] == result.ops.count("CONV_2D")
    by_name = {t["name"]: t for t in sg["tensors"]}
    weights = next(t for t in sg["tensors"] if t["dtype"] == "int8" and t["data_bytes"] and len(t["shape"]) == 4)
    assert weights["quant"]["channels"] == weights["shape"][0] and weights["quant"]["zero_points"] == [0]
    assert weights["data_bytes"] == int(np.prod(weights["shape"]))
    act = by_name["relu_0"]
    assert act["dtype"] == "int8" and set(act["quant"]) == {"scale", "zero_point"}
    assert -128 <= act["quant"]["zero_point"] <= 127 and act["quant"]["scale"] > 0
    text = inspector.render(info)
    assert "CONV_2D x2" in text and "per-channel x16 axis 0" in text and "relu_0" in text
    json.dumps(info)


def test_qdq_onnx_view(built):
    folder, _ = built
    info = inspector.inspect(folder / "m.qdq.onnx")
    acts, weights = info["qdq"]["quantized_activations"], info["qdq"]["quantized_weights"]
    assert info["format"] == "onnx" and info["metadata"]["ganglion.qdq.profile"] == "onnxruntime"
    assert {a["tensor"] for a in acts} >= {"input", "relu_0"} and all(a["dtype"] == "uint8" for a in acts)
    conv_w = [w for w in weights if w["dtype"] == "int8" and len(w["shape"]) == 4]
    assert len(conv_w) == 2 and all(w["per_channel"] and w["channels"] == w["shape"][0] for w in conv_w)
    assert any(w["dtype"] == "int32" for w in weights)           # int32 bias in this profile
    assert "QDQ: " in inspector.render(info)
    json.dumps(info)


def test_float_onnx(digits_dir):
    info = inspector.inspect(digits_dir / "digits_cnn.onnx")
    assert info["op_counts"] == {"Conv": 2, "Relu": 2, "MaxPool": 2, "Flatten": 1, "Gemm": 1}
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 1, 8, 8]}]
    model = onnx.load(str(digits_dir / "digits_cnn.onnx"))
    expected = sum(int(np.prod(i.dims)) * 4 for i in model.graph.initializer)
    assert info["initializer_bytes_by_dtype"] == {"float32": expected}
    assert not info["qdq"]["quantized_activations"]
    names = [n.name for n in model.graph.node]
    assert [n["name"] for n in info["node_list"]] == names
    text = inspector.render(info)
    assert all(name in text for name in names)                # what --keep-float takes


def test_gpk_summary_and_models(built):
    folder, _ = built
    info = inspector.inspect(folder / "m.gpk")
    assert info["format"] == "gpk" and info["signed"] is False
    assert set(info["models"]) == {"model.tflite", "model.qdq.onnx"}
    assert info["models"]["model.tflite"]["format"] == "tflite"
    text = inspector.render(info)
    assert "artifact digits 1.2.0" in text and "== model.qdq.onnx ==" in text and "SQNR 33.3 dB" in text
    assert "input: input int8 [1, 1, 8, 8] onnx (scale 0.5, zp -3)" in text
    assert "sha256=abababababab..." in text
    json.dumps(info)


def test_tampered_gpk_is_refused(built, tmp_path):
    folder, _ = built
    data = bytearray((folder / "m.gpk").read_bytes())
    (tmp_path / "cut.gpk").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError):
        inspector.inspect(tmp_path / "cut.gpk")


def test_not_a_model(tmp_path, built):
    folder, result = built
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 definitely not protobuf" * 3)
    (tmp_path / "trunc.tflite").write_bytes(result.flatbuffer[:40])
    (tmp_path / "text.tflite").write_text("hello")
    for name in ("junk.onnx", "trunc.tflite", "text.tflite", "missing.onnx"):
        with pytest.raises(InputError) as info:
            inspector.inspect(tmp_path / name)
        assert info.value.where and info.value.code.startswith("inspect")


def test_external_data_is_counted_never_opened(tmp_path, digits_dir):
    model = onnx.load(str(digits_dir / "digits_cnn.onnx"))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()                 # inspect must not need (or read) it
    info = inspector.inspect(tmp_path / "ext.onnx")
    assert info["external_initializers"] == len(model.graph.initializer)
    assert info["initializer_bytes_by_dtype"]["float32"] == sum(int(np.prod(i.dims)) * 4 for i in model.graph.initializer)
    assert "external" in inspector.render(info)
