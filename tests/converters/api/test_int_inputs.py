"""Integer, bool and 0-d (scalar) inputs: calibration data keeps their dtype, the TFLite model takes
them unquantized, and LiteRT's answers match onnxruntime's."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from converters import api
from converters.config import ConvertConfig
from converters.verify.metrics import sqnr_db
from core.litert import make_interpreter
from tests.converters import io_models

CASES = [("int64", [1, 4], False), ("int32", [1, 4], False), ("bool", [1, 4], False), ("int64", [], False),
         ("int32", [], False), ("int64", [1, 4], True), ("int64", [], True), ("int32", [], True)]


def _data(dtype: str, shape: list[int], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2 if dtype == "bool" else 50, size=(n, *shape))
    return values.astype(dtype)


@pytest.mark.parametrize("dtype, shape, arith", CASES)
def test_integer_inputs_stay_integer_and_match_onnxruntime(tmp_path, dtype, shape, arith):
    path = io_models.int_input(tmp_path / "ints.onnx", dtype, shape, arith)
    np.savez(tmp_path / "calib.npz", ids=_data(dtype, shape, 16, 0))
    np.savez(tmp_path / "held.npz", ids=_data(dtype, shape, 12, 1))
    result = api.convert(ConvertConfig(model=path, output=tmp_path / "ints.gpk", calib=tmp_path / "calib.npz",
                                       holdout=tmp_path / "held.npz", progress=False))
    (entry,) = result.manifest["inputs"]
    assert entry["dtype"] == dtype and entry["shape"] == shape and entry["quant"] is None
    assert result.report["tflite"]["outputs"]["y"]["sqnr_db"] > 30
    interp = make_interpreter(result.files["model.tflite"])
    (detail,) = interp.get_input_details()
    assert np.dtype(detail["dtype"]) == np.dtype(dtype) and list(detail["shape"]) == shape
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = interp.get_output_details()[0]["index"]
    refs, gots = [], []
    for sample in _data(dtype, shape, 12, 1):      # the holdout, inside the calibrated range
        interp.set_tensor(detail["index"], np.asarray(sample))
        interp.invoke()
        gots.append(interp.get_tensor(out).copy())
        refs.append(session.run(["y"], {"ids": np.asarray(sample)})[0])
    assert sqnr_db(np.stack(refs), np.stack(gots)) > 30


def test_float_data_for_an_integer_input_is_refused(tmp_path):
    from converters.errors import CalibrationDataError
    path = io_models.int_input(tmp_path / "ints.onnx", "int64", [1, 4])
    np.savez(tmp_path / "calib.npz", ids=np.random.default_rng(0).normal(size=(16, 1, 4)))
    with pytest.raises(CalibrationDataError, match="expected dtype int64, got float64"):
        api.convert(ConvertConfig(model=path, output=tmp_path / "x.gpk", calib=tmp_path / "calib.npz",
                                  progress=False))
    assert not (tmp_path / "x.gpk").exists()
