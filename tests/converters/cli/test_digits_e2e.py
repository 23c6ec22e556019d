"""End to end through the installed `ganglion` command: convert -> signed .gpk -> verify -> inspect.

This is what scripts/demo.sh does, as a real subprocess of the console script, checking the
numbers the commands print (JSON) rather than their wording.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core import artifact, keys

GANGLION = Path(sys.executable).with_name("ganglion")


def ganglion(*argv, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(GANGLION), *map(str, argv)], capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"ganglion {' '.join(map(str, argv))} -> {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def converted(tmp_path_factory, digits_dir):
    """One signed artifact, converted with holdout verification, shared by the tests below."""
    folder = tmp_path_factory.mktemp("e2e")
    private, public = keys.generate(folder / "signer.key")
    out = folder / "digits.gpk"
    proc = ganglion("convert", digits_dir / "digits_cnn.onnx", "--calib", digits_dir / "calib.npz",
                    "--holdout", digits_dir / "holdout.npz", "--holdout-labels", digits_dir / "holdout_labels.npy",
                    "--labels", digits_dir / "labels.txt", "--target", "both", "--signing-key", private,
                    "-o", out, "--json")
    return {"path": out, "public": public, "summary": json.loads(proc.stdout), "folder": folder}


def test_convert_writes_a_signed_artifact_with_a_full_manifest(converted, digits_dir):
    art = artifact.read(converted["path"], trusted_keys=[keys.load_public(converted["public"])])
    m = art.manifest
    assert art.signed
    assert {e["format"] for e in m["models"]} == {"tflite", "onnx"}
    assert m["name"] == "digits_cnn"
    assert m["source_model"]["sha256"] == artifact.sha256((digits_dir / "digits_cnn.onnx").read_bytes())
    assert m["labels"] == [str(i) for i in range(10)]
    assert m["calibration"]["method"] == "auto"
    assert m["inputs"][0]["name"] == "input" and m["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert m["outputs"][0]["name"] == "logits"
    assert "input" in m["tensor_map"] and "logits" in m["tensor_map"]
    for fmt in ("tflite", "onnx"):
        fid = m["fidelity"][fmt]
        assert fid["samples"] == 450
        assert fid["accuracy"]["candidate"] >= fid["accuracy"]["reference"] - 0.01
        assert fid["outputs"]["logits"]["sqnr_db"] > 20
    assert converted["summary"]["fidelity"] == m["fidelity"]


def test_verify_reports_metrics_and_accuracy(converted, digits_dir):
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--labels", digits_dir / "holdout_labels.npy",
                    "--trusted-key", converted["public"], "--json")
    report = json.loads(proc.stdout)
    assert report["samples"] == 450 and report["candidate"] == "tflite"
    logits = report["outputs"]["logits"]
    assert logits["sqnr_db"] > 20
    assert logits["cosine"] > 0.99
    assert logits["top1_agreement"] >= 0.98
    assert report["accuracy"]["candidate"] >= report["accuracy"]["reference"] - 0.01


def test_verify_the_qdq_model_of_the_artifact(converted, digits_dir):
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--format", "onnx", "--json")
    report = json.loads(proc.stdout)
    assert report["candidate"] == "onnx"
    assert report["outputs"]["logits"]["sqnr_db"] > 20


def test_verify_per_layer_ranks_layers(converted, digits_dir):
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--per-layer", "--limit", "50", "--json")
    report = json.loads(proc.stdout)
    layers = report["per_layer"]
    assert report["samples"] == 50
    assert len(layers) >= 4                     # conv, conv, pools, classifier
    assert {"classifier"} <= {row["node"] for row in layers}
    added = [row["added_nsr"] for row in layers]
    assert added == sorted(added, reverse=True)   # worst first


def test_verify_text_report_is_readable(converted, digits_dir):
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--labels", digits_dir / "holdout_labels.npy")
    assert "SQNR" in proc.stdout and "accuracy" in proc.stdout


def test_verify_with_an_untrusted_key_fails(converted, digits_dir):
    _, other = keys.generate(converted["folder"] / "other.key")
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--trusted-key", other, check=False)
    assert proc.returncode == 3                     # a .gpk whose signature fails is bad input (core/errors.py)
    assert "artifact.signature_invalid" in proc.stderr


def test_inspect_shows_manifest_and_models(converted):
    info = json.loads(ganglion("inspect", converted["path"], "--json").stdout)
    text = json.dumps(info)
    assert "CONV_2D" in text and "FULLY_CONNECTED" in text
    assert "digits_cnn" in text
    assert "QuantizeLinear" in text
    human = ganglion("inspect", converted["path"]).stdout
    assert "CONV_2D" in human


def test_verify_per_layer_of_the_qdq_model(converted, digits_dir):
    proc = ganglion("verify", converted["path"], "--reference", digits_dir / "digits_cnn.onnx",
                    "--data", digits_dir / "holdout.npz", "--format", "onnx", "--per-layer", "--limit", "30",
                    "--json")
    report = json.loads(proc.stdout)
    assert report["candidate"] == "onnx" and report["samples"] == 30
    assert "classifier" in {row["node"] for row in report["per_layer"]}
