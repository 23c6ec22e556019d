"""The one trained model: int8 accuracy on held-out digits stays within 1 point of float.

The int8 TFLite runs in the real LiteRT interpreter; the float model in onnxruntime. The model
and data are the committed files made by examples/models/digits_cnn.py.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters import api
from converters.config import ConvertConfig
from core.litert import make_interpreter


@pytest.fixture(scope="module")
def holdout(digits_dir):
    x = np.load(digits_dir / "holdout.npz", allow_pickle=False)["input"]
    y = np.load(digits_dir / "holdout_labels.npy", allow_pickle=False)
    return x, y


@pytest.fixture(scope="module")
def float_accuracy(digits_dir, holdout):
    x, y = holdout
    sess = ort.InferenceSession(str(digits_dir / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    pred = np.array([sess.run(None, {"input": xi[None]})[0].argmax() for xi in x])
    return float(np.mean(pred == y))


def litert_predictions(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Argmax of the TFLite model on each sample, quantizing/dequantizing integer I/O itself."""
    interp = make_interpreter(flatbuffer)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    preds = []
    for xi in x:
        value = xi[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            value = np.clip(np.round(value / scale) + zero, info.min, info.max).astype(inp["dtype"])
        if tuple(inp["shape"]) != value.shape:          # --layout nhwc
            value = value.transpose(0, 2, 3, 1)
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        logits = interp.get_tensor(out["index"]).astype(np.float32)
        preds.append(logits.argmax())
    return np.array(preds)


def convert(tmp_path, digits_dir, output: str, **kw) -> api.ConvertResult:
    cfg = ConvertConfig(model=digits_dir / "digits_cnn.onnx", output=tmp_path / output,
                        calib=digits_dir / "calib.npz", progress=False, **kw)
    return api.convert(cfg)


def test_committed_float_model_is_accurate(float_accuracy):
    assert float_accuracy >= 0.95


def test_int8_tflite_accuracy_within_one_point_of_float(tmp_path, digits_dir, holdout, float_accuracy):
    convert(tmp_path, digits_dir, "digits.tflite")
    flatbuffer = (tmp_path / "digits.tflite").read_bytes()
    x, y = holdout
    int8_accuracy = float(np.mean(litert_predictions(flatbuffer, x) == y))
    print(f"\ndigits holdout accuracy: float {float_accuracy:.4f}, int8 TFLite {int8_accuracy:.4f}")
    assert int8_accuracy >= float_accuracy - 0.01


@pytest.mark.parametrize("io, layout", [("int8", "onnx"), ("uint8", "nhwc")])
def test_integer_io_keeps_accuracy(tmp_path, digits_dir, holdout, float_accuracy, io, layout):
    convert(tmp_path, digits_dir, "digits.tflite", io=io, layout=layout)
    x, y = holdout
    accuracy = float(np.mean(litert_predictions((tmp_path / "digits.tflite").read_bytes(), x) == y))
    assert accuracy >= float_accuracy - 0.01


def test_qdq_onnx_accuracy_within_one_point_of_float(tmp_path, digits_dir, holdout, float_accuracy):
    convert(tmp_path, digits_dir, "digits.qdq.onnx")
    sess = ort.InferenceSession(str(tmp_path / "digits.qdq.onnx"), providers=["CPUExecutionProvider"])
    x, y = holdout
    pred = np.array([sess.run(None, {"input": xi[None]})[0].argmax() for xi in x])
    assert float(np.mean(pred == y)) >= float_accuracy - 0.01


def test_training_script_reproduces_the_committed_split(digits_dir):
    """The split and data files come from the script (BLAS-independent parts compared exactly)."""
    from examples.models import digits_cnn
    x_tr, x_ho, _, y_ho = digits_cnn.load_split()
    np.testing.assert_array_equal(x_ho, np.load(digits_dir / "holdout.npz")["input"])
    np.testing.assert_array_equal(y_ho, np.load(digits_dir / "holdout_labels.npy"))
    np.testing.assert_array_equal(x_tr[:200], np.load(digits_dir / "calib.npz")["input"])


def test_training_reaches_95_percent_quickly():
    """A short run of the real training loop (5 epochs) already generalises."""
    from examples.models import digits_cnn
    x_tr, x_ho, y_tr, y_ho = digits_cnn.load_split()
    params = digits_cnn.train(x_tr, y_tr, epochs=5)
    assert digits_cnn.accuracy(params, x_ho, y_ho) >= 0.95


def test_image_folder_calibration_with_preprocessing(tmp_path, digits_dir, holdout, float_accuracy):
    """Calibrate from PNG files (as a camera pipeline would save them) with a preprocessing spec."""
    from PIL import Image
    from core import artifact
    images = tmp_path / "images"
    images.mkdir()
    calib = np.load(digits_dir / "calib.npz")["input"][:40]
    for i, x in enumerate(calib):
        Image.fromarray(np.round(x[0] * 255).astype(np.uint8), mode="L").save(images / f"{i:03d}.png")
    spec = '{"channels": "L", "scale": 0.00392156862745098}'
    cfg = ConvertConfig(model=digits_dir / "digits_cnn.onnx", output=tmp_path / "img.gpk", calib=images,
                        preprocess=spec, progress=False)
    api.convert(cfg)
    art = artifact.read(tmp_path / "img.gpk")
    assert art.manifest["preprocessing"]["channels"] == "L"
    assert art.manifest["calibration"]["source"] == "images"
    x, y = holdout
    accuracy = float(np.mean(litert_predictions(art.model_bytes("tflite"), x) == y))
    assert accuracy >= float_accuracy - 0.01
    # verify on the same folder reuses the manifest's preprocessing: no spec on the command line.
    report = api.verify(tmp_path / "img.gpk", digits_dir / "digits_cnn.onnx", images, progress=False)
    assert report.samples == 40 and report.summary["sqnr_db"] > 20


@pytest.mark.parametrize("observer", ["percentile:99.99", "entropy", "mse"])
def test_every_observer_keeps_accuracy(tmp_path, digits_dir, holdout, float_accuracy, observer):
    result = convert(tmp_path, digits_dir, "o.gpk", observer=observer, holdout=digits_dir / "holdout.npz",
                     holdout_labels=digits_dir / "holdout_labels.npy")
    assert result.manifest["calibration"]["method"] == observer
    fid = result.report["tflite"]
    assert fid["accuracy"]["candidate"] >= float_accuracy - 0.01


def test_verify_a_dynamic_onnx_candidate_against_a_dynamic_reference(tmp_path, digits_dir, holdout):
    """A QDQ .onnx keeps the float model's dynamic batch: its dim is 0 in the graph, which must not be
    pinned onto the reference (ORT-quantized models crashed verify with a 'non-positive dims' error)."""
    model = onnx.load(str(digits_dir / "digits_cnn.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dynamic = tmp_path / "dyn.onnx"
    onnx.save(model, str(dynamic))
    candidate = tmp_path / "dyn.qdq.onnx"
    api.convert(ConvertConfig(model=dynamic, calib=digits_dir / "calib.npz", output=candidate, target="qdq",
                              progress=False))
    qdq = onnx.load(str(candidate))               # ONNX Runtime's quantizer keeps the batch dynamic; ours pins it
    qdq.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(qdq, str(candidate))
    np.savez(tmp_path / "few.npz", input=holdout[0][:20])
    report = api.verify(candidate, dynamic, tmp_path / "few.npz", progress=False)
    assert report.candidate == "onnx" and report.summary["sqnr_db"] > 25.0
