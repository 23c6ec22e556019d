"""`ganglion convert/verify/inspect` from the outside: help text, exit codes, and no output on failure.

Runs the real command through ``edge.cli.main`` (the console-script entry point) in-process.
The successful paths (convert -> verify -> inspect) are in test_digits_e2e.py.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["convert", "verify", "inspect"])
def test_help_teaches_with_examples(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "Examples:" in out
    assert f"ganglion {command}" in out


def test_convert_help_lists_the_main_flags(capsys):
    _, out, _ = run(capsys, "convert", "--help")
    for flag in ("--calib", "--target", "--quantize", "--io", "--layout", "--observer", "--holdout",
                 "--keep-float", "--auto-keep-float", "--signing-key", "--input-shape", "--num-calib"):
        assert flag in out


@pytest.fixture
def digits_copy(tmp_path, digits_dir):
    """The committed digits files, copied so tests can corrupt them."""
    for name in ("digits_cnn.onnx", "calib.npz", "holdout.npz", "holdout_labels.npy", "labels.txt"):
        shutil.copy(digits_dir / name, tmp_path / name)
    return tmp_path


def _assert_failed_cleanly(code, err, out_path, exit_code, fragment):
    assert code == exit_code, err
    assert fragment in err
    assert not out_path.exists()
    assert not list(out_path.parent.glob(f".{out_path.name}.*"))    # no temp file left either


def test_corrupt_model_exits_3_and_writes_nothing(capsys, tmp_path, digits_copy):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", bad, "--calib", digits_copy / "calib.npz", "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.model_load]")


def test_truncated_model_exits_3_and_writes_nothing(capsys, tmp_path, digits_copy):
    model = digits_copy / "digits_cnn.onnx"
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    out = tmp_path / "out.tflite"
    code, _, err = run(capsys, "convert", cut, "--calib", digits_copy / "calib.npz", "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.")


def test_wrong_shape_calibration_exits_3_and_writes_nothing(capsys, tmp_path, digits_copy):
    bad = tmp_path / "bad_calib.npz"
    np.savez(bad, input=np.zeros((20, 1, 7, 7), np.float32))
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", bad, "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.calibration_data]")
    assert "input" in err


def test_nan_calibration_exits_3_and_writes_nothing(capsys, tmp_path, digits_copy):
    data = np.load(digits_copy / "calib.npz")["input"].copy()
    data[3, 0, 2, 2] = np.nan
    bad = tmp_path / "nan_calib.npz"
    np.savez(bad, input=data)
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", bad, "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.calibration_data]")


def test_wrong_input_name_in_npz_exits_3(capsys, tmp_path, digits_copy):
    bad = tmp_path / "renamed.npz"
    np.savez(bad, pixels=np.load(digits_copy / "calib.npz")["input"])
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", bad, "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "pixels")


def test_int8_without_calibration_is_a_usage_error(capsys, tmp_path, digits_copy):
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "-o", out)
    _assert_failed_cleanly(code, err, out, 2, "--calib")


@pytest.mark.parametrize("flags, fragment", [
    (["-o", "{tmp}/m.tflite", "--target", "qdq"], "--target"),
    (["-o", "{tmp}/m.txt"], ".gpk, .tflite or .onnx"),
    (["-o", "{tmp}/m.gpk", "--quantize", "none", "--io", "int8"], "--io int8"),
    (["-o", "{tmp}/m.gpk", "--quantize", "float16", "--target", "both"], "QDQ"),
    (["-o", "{tmp}/m.tflite", "--input-shape", "input=1,x,8"], "--input-shape"),
])
def test_contradictory_flags_are_usage_errors(capsys, tmp_path, digits_copy, flags, fragment):
    argv = [f.format(tmp=tmp_path) for f in flags]
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib",
                       digits_copy / "calib.npz", *argv)
    assert code == 2, err
    assert fragment in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("m.")] == []


def test_unknown_keep_float_node_is_refused(capsys, tmp_path, digits_copy):
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                       "--keep-float", "no_such_node", "-o", out)
    _assert_failed_cleanly(code, err, out, 2, "no_such_node")


def test_unknown_input_shape_name_is_refused(capsys, tmp_path, digits_copy):
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                       "--input-shape", "pixels=1,1,8,8", "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "pixels")


def test_missing_model_file_is_a_click_error(capsys, tmp_path):
    code, _, err = run(capsys, "convert", tmp_path / "nope.onnx", "-o", tmp_path / "x.gpk")
    assert code == 3                     # a missing file is an input error in every command (docs/cli.md)
    assert "does not exist" in err


def test_verify_refuses_a_tampered_artifact(capsys, tmp_path, digits_copy):
    fake = tmp_path / "fake.gpk"
    fake.write_bytes(b"PK\x03\x04 truncated zip")
    code, _, err = run(capsys, "verify", fake, "--reference", digits_copy / "digits_cnn.onnx",
                       "--data", digits_copy / "holdout.npz")
    assert code == 3, err
    assert "error[artifact" in err


def test_inspect_refuses_garbage(capsys, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    code, _, err = run(capsys, "inspect", bad)
    assert code != 0
    assert "error[" in err


def test_unsupported_ops_are_all_listed_at_once(capsys, tmp_path, digits_copy):
    from onnx import TensorProto, helper
    import onnx
    graph = helper.make_graph(
        [helper.make_node("Hardmax", ["x"], ["a"], name="hardmax_node"),
         helper.make_node("Relu", ["a"], ["b"], name="relu_node"),
         helper.make_node("Round", ["b"], ["y"], name="round_node")], "two_unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    out = tmp_path / "u.tflite"
    code, _, err = run(capsys, "convert", model, "--quantize", "none", "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.unsupported_op]")
    assert "hardmax_node" in err and "round_node" in err and "relu_node" not in err


@pytest.fixture
def converted_bare(tmp_path, digits_copy, capsys):
    out = tmp_path / "d.tflite"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                       "-o", out, "-q")
    assert code == 0, err
    return out


def test_convert_json_summary(capsys, tmp_path, digits_copy):
    import json
    out = tmp_path / "sub" / "d.gpk"            # a missing output folder is created
    code, stdout, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib",
                            digits_copy / "calib.npz", "-o", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["output"] == str(out) and summary["bytes"] == out.stat().st_size
    assert summary["models"]["model.tflite"] > 1000
    assert summary["inputs"][0]["name"] == "input"


def test_verify_bare_tflite(capsys, converted_bare, digits_copy):
    import json
    code, stdout, err = run(capsys, "verify", converted_bare, "--reference", digits_copy / "digits_cnn.onnx",
                            "--data", digits_copy / "holdout.npz", "--limit", "40", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["samples"] == 40 and report["outputs"]["logits"]["sqnr_db"] > 20


def test_verify_per_layer_needs_the_artifact_tensor_map(capsys, converted_bare, digits_copy):
    code, _, err = run(capsys, "verify", converted_bare, "--reference", digits_copy / "digits_cnn.onnx",
                       "--data", digits_copy / "holdout.npz", "--per-layer")
    assert code == 2, err
    assert "tensor_map" in err


def test_verify_label_count_mismatch_is_an_input_error(capsys, converted_bare, digits_copy, tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.load(digits_copy / "holdout_labels.npy")[:10])
    code, _, err = run(capsys, "verify", converted_bare, "--reference", digits_copy / "digits_cnn.onnx",
                       "--data", digits_copy / "holdout.npz", "--labels", short)
    assert code == 3, err
    assert "labels" in err


def test_verify_unsigned_artifact_with_trusted_key_exits_3(capsys, tmp_path, digits_copy):
    from core import keys
    _, public = keys.generate(tmp_path / "k.key")
    out = tmp_path / "unsigned.gpk"
    assert run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
               "-o", out, "-q")[0] == 0
    code, _, err = run(capsys, "verify", out, "--reference", digits_copy / "digits_cnn.onnx",
                       "--data", digits_copy / "holdout.npz", "--trusted-key", public)
    assert code == 3                          # an artifact problem is bad input (core/errors.py)
    assert "artifact.signature_missing" in err


@pytest.mark.parametrize("target", ["tflite", "onnx"])
def test_inspect_bare_models_as_json(capsys, tmp_path, digits_copy, target):
    import json
    path = digits_copy / "digits_cnn.onnx"
    if target == "tflite":
        path = tmp_path / "d.tflite"
        assert run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                   "-o", path, "-q")[0] == 0
    code, stdout, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    text = json.dumps(json.loads(stdout))
    assert ("CONV_2D" if target == "tflite" else "Conv") in text


def test_convert_help_does_not_import_onnx():
    """--help stays fast: the heavy packages load only when a command runs."""
    import subprocess
    import sys
    code = ("import sys; from edge.cli import main; main(['convert', '--help']); "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'ai_edge_litert') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_unwritable_output_is_a_usage_error(capsys, tmp_path, digits_copy):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                       "-o", blocker / "out.gpk", "-q")
    assert code == 2, err
    assert "error[convert.output]" in err


def test_bad_signing_key_fails_before_any_work(capsys, tmp_path, digits_copy):
    key = tmp_path / "broken.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    out = tmp_path / "out.gpk"
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz",
                       "--key", key, "-o", out)
    _assert_failed_cleanly(code, err, out, 5, "error[keys.unreadable]")
    assert "calibrated" not in err          # refused before calibration started


def test_default_output_is_the_model_name_as_gpk_in_the_current_folder(capsys, tmp_path, digits_copy,
                                                                       monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = run(capsys, "convert", digits_copy / "digits_cnn.onnx", "--calib", digits_copy / "calib.npz", "-q")
    assert code == 0, err
    assert [p.name for p in work.iterdir()] == ["digits_cnn.gpk"]


def test_external_data_outside_the_model_folder_is_refused(capsys, tmp_path, digits_copy):
    """A model naming weights outside its folder (../secret) is refused before anything is read."""
    import onnx
    from onnx.external_data_helper import set_external_data
    model = onnx.load(str(digits_copy / "digits_cnn.onnx"))
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location="../secret.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 4096)
    path = folder / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "evil.gpk"
    code, _, err = run(capsys, "convert", path, "--calib", digits_copy / "calib.npz", "-o", out)
    _assert_failed_cleanly(code, err, out, 3, "error[convert.model_load]")
    assert "secret.bin" in err
