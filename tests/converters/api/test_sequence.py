"""The trained recurrent models: int8 accuracy on held-out sequences stays within 1 point of float.

``examples/sequence/`` holds a bidirectional-LSTM and a GRU waveform classifier trained and exported
by ``examples/sequence/train.py`` (torch's TorchScript exporter, opset 17: the LSTM/GRU nodes come
with the Transpose/Squeeze/Concat/ReduceMean glue a real export has). ``ganglion convert`` with
nothing but ``--calib`` makes the int8 TFLite (run in LiteRT) and the QDQ ONNX (run in onnxruntime);
the float reference is the ONNX model in onnxruntime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from converters import api
from converters.config import ConvertConfig
from core.litert import make_interpreter

SEQ_DIR = Path(__file__).resolve().parents[3] / "examples" / "sequence"
MODELS = ["lstm_classifier", "gru_classifier"]


@pytest.fixture(scope="module")
def holdout():
    x = np.load(SEQ_DIR / "holdout.npz", allow_pickle=False)["input"]
    y = np.load(SEQ_DIR / "holdout_labels.npy", allow_pickle=False)
    return x, y


def ort_accuracy(path: Path, x, y) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean([sess.run(None, {"input": xi[None]})[0].argmax() == yi for xi, yi in zip(x, y)]))


def litert_accuracy(flatbuffer: bytes, x, y) -> float:
    interp = make_interpreter(flatbuffer)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = []
    for xi, yi in zip(x, y):
        interp.set_tensor(inp["index"], xi[None].astype(np.float32))
        interp.invoke()
        hits.append(interp.get_tensor(out["index"]).argmax() == yi)
    return float(np.mean(hits))


def convert(tmp_path, name: str, output: str, **kw) -> api.ConvertResult:
    cfg = ConvertConfig(model=SEQ_DIR / f"{name}.onnx", output=tmp_path / output,
                        calib=SEQ_DIR / "calib.npz", progress=False, **kw)
    return api.convert(cfg)


@pytest.mark.parametrize("name", MODELS)
def test_committed_models_are_small_and_accurate(name, holdout):
    assert (SEQ_DIR / f"{name}.onnx").stat().st_size < 300_000
    assert ort_accuracy(SEQ_DIR / f"{name}.onnx", *holdout) >= 0.85


@pytest.mark.parametrize("int8_recurrent", [False, True], ids=["default", "int8_recurrent"])
@pytest.mark.parametrize("name", MODELS)
def test_int8_tflite_accuracy_within_one_point_of_float(tmp_path, name, int8_recurrent, holdout):
    """Default: the recurrent node is a float island in an int8 graph; --int8-recurrent: all int8."""
    convert(tmp_path, name, f"{name}.tflite", int8_recurrent=int8_recurrent)
    flatbuffer = (tmp_path / f"{name}.tflite").read_bytes()
    interp = make_interpreter(flatbuffer)
    dtypes = {d["index"]: d["dtype"] for d in interp.get_tensor_details()}
    gates = {np.dtype(dtypes[o]) for op in interp._get_ops_details() if op["op_name"] == "LOGISTIC" for o in op["outputs"]}
    assert gates == ({np.dtype(np.int8)} if int8_recurrent else {np.dtype(np.float32)}), gates
    float_acc, int8_acc = ort_accuracy(SEQ_DIR / f"{name}.onnx", *holdout), litert_accuracy(flatbuffer, *holdout)
    assert int8_acc >= float_acc - 0.01, f"{name} held-out accuracy: float {float_acc:.4f}, int8 TFLite {int8_acc:.4f}"


@pytest.mark.parametrize("name", MODELS)
def test_qdq_accuracy_within_one_point_of_float(tmp_path, name, holdout):
    convert(tmp_path, name, f"{name}.qdq.onnx")
    float_acc = ort_accuracy(SEQ_DIR / f"{name}.onnx", *holdout)
    qdq_acc = ort_accuracy(tmp_path / f"{name}.qdq.onnx", *holdout)
    assert qdq_acc >= float_acc - 0.01, f"{name} held-out accuracy: float {float_acc:.4f}, QDQ {qdq_acc:.4f}"


def test_data_files_come_from_the_script():
    from examples.sequence.data import waveforms
    x, y = waveforms(400, seed=2)
    np.testing.assert_array_equal(x, np.load(SEQ_DIR / "holdout.npz")["input"])
    np.testing.assert_array_equal(y, np.load(SEQ_DIR / "holdout_labels.npy"))
    np.testing.assert_array_equal(waveforms(3000, seed=1)[0][:200], np.load(SEQ_DIR / "calib.npz")["input"])
