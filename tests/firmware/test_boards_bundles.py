"""Bundles follow the board: its artifact format, its runtime for the golden, its wheel tags."""
from __future__ import annotations

from pathlib import Path

import pytest

import boards
from core import artifact
from core.errors import ArtifactError
from firmware import wheels
from firmware.build import build
from firmware.install import install
from firmware.validate import validate
from firmware.wheels import WheelName, compatible
from tests.firmware import helpers


def test_jetson_bundle_carries_onnx_and_its_golden_comes_from_onnxruntime(tmp_path, fw_keys, wheelhouse):
    gpk = tmp_path / "m.gpk"
    artifact.write(gpk, {"name": "tiny", "version": "1.0.0",
                         "models": [{"format": "onnx", "file": "model.qdq.onnx"}]},
                   {"model.qdq.onnx": helpers.tiny_onnx()})
    config = tmp_path / "daemon.toml"
    config.write_bytes(helpers.CONFIG)
    manifest = build("jetson-orin-nano", gpk, config, fw_keys["private"], tmp_path / "j.fw", wheelhouse,
                     version="1.0.0")
    assert manifest["selftest"]["format"] == "onnx"
    assert manifest["selftest"]["recorded_with"].startswith("onnxruntime")
    assert manifest["python"] == "3.10" and manifest["architecture"] == "aarch64"
    root = tmp_path / "root"
    install(tmp_path / "j.fw", root, fw_keys["public"], cross=True)      # an aarch64 bundle, checked here
    report = validate(root)           # replayed with onnxruntime in a child process
    assert report["ok"], report


def test_a_board_whose_format_the_artifact_lacks_is_refused_at_build(tmp_path, fw_keys, wheelhouse):
    gpk = helpers.tiny_gpk(tmp_path / "m.gpk")      # tflite only
    config = tmp_path / "daemon.toml"
    config.write_bytes(helpers.CONFIG)
    with pytest.raises(ArtifactError) as info:
        build("jetson-orin-nano", gpk, config, fw_keys["private"], tmp_path / "j.fw", wheelhouse, version="1.0.0")
    assert info.value.code == "artifact.no_format"
    assert not (tmp_path / "j.fw").exists()


@pytest.mark.parametrize("filename,board,fits", [
    ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl", "rpi4", True),
    ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl", "x86_64-generic", False),
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_aarch64.whl", "rpi4", False),
    ("numpy-2.4.6-cp311-cp311-musllinux_1_2_aarch64.whl", "rpi4", False),
    ("protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl", "rpi4", True),
    ("protobuf-7.36.2-cp312-abi3-manylinux2014_aarch64.whl", "rpi4", False),
    ("protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl", "jetson-orin-nano", True),
    ("flatbuffers-25.12.19-py2.py3-none-any.whl", "coral-devboard", True),
    ("onnxruntime-1.20.0-cp310-cp310-manylinux_2_27_aarch64.whl", "jetson-orin-nano", True),
    ("ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_34_x86_64.whl", "x86_64-generic", False),
])
def test_wheel_tags_are_matched_like_pip_on_the_board(filename, board, fits):
    assert compatible(WheelName.parse(filename), boards.load(board)) is fits


def test_pip_download_command_lists_every_platform_tag():
    board = boards.load("rpi4")
    cmd = wheels.pip_download_command(board, Path("/tmp/x"))
    assert cmd.count("--platform") == len(board.python.platform_tags) >= 3
    assert "--only-binary=:all:" in cmd and cmd[cmd.index("--python-version") + 1] == "3.11"
    assert cmd[-2:] == list(board.python.requirements)
