"""Device-test fixtures: tiny real models on disk (TFLite float/int8, ONNX, a .gpk)."""
from __future__ import annotations

import pytest

from core import artifact
from tests.edge import models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge-models")
    (d / "dense.tflite").write_bytes(models.dense_tflite())
    (d / "dense_fixed.tflite").write_bytes(models.dense_tflite(dynamic_batch=False))
    (d / "dense_int8.tflite").write_bytes(models.dense_tflite(int8=True))
    (d / "dense.onnx").write_bytes(models.dense_onnx())
    return d


@pytest.fixture(scope="session")
def dense_tflite(model_dir):
    return model_dir / "dense.tflite"


@pytest.fixture(scope="session")
def dense_onnx(model_dir):
    return model_dir / "dense.onnx"


@pytest.fixture(scope="session")
def dense_int8(model_dir):
    return model_dir / "dense_int8.tflite"


def make_gpk(path, *, key=None, formats=("tflite", "onnx"), labels=None):
    files, entries = {}, []
    if "tflite" in formats:
        files["model.tflite"] = models.dense_tflite()
        entries.append({"format": "tflite", "file": "model.tflite"})
    if "onnx" in formats:
        files["model.qdq.onnx"] = models.dense_onnx()
        entries.append({"format": "onnx", "file": "model.qdq.onnx"})
    manifest = {"name": "dense", "version": "1", "models": entries, "labels": labels or ["a", "b", "c"],
                "preprocessing": {}}
    artifact.write(path, manifest, files, private_key=key)
    return path
