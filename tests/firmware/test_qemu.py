"""An aarch64 bundle for ``rpi4`` from REAL aarch64 wheels, installed into a folder, self-tested under qemu.

scripts/prepare_qemu_aarch64.sh (cached under ~/.cache, outside git) provides a Debian bookworm
arm64 sysroot with python3.11 and a Cortex-A72 /proc/cpuinfo, and the board's wheels downloaded by
``firmware.wheels`` (ai-edge-litert, numpy and their dependencies, manylinux aarch64). Ganglion's
own device packages go in as the wheel ``firmware build`` packs by default (edge, firmware, boards:
no converters, as on a device), so the self-test runs the slot's copy of Ganglion. The install unpacks aarch64 wheels on this x86_64 host; ``validate``
then runs the slot's self-test with ``qemu-aarch64-static -L SYSROOT -cpu cortex-a72`` and the
slot's own site folder, XNNPACK included, against the golden recorded on the host.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware.install import install
from firmware.status import status
from firmware.validate import validate
from tests.firmware import helpers

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-aarch64-static")


@pytest.fixture(scope="module")
def prepared():
    if QEMU is None:
        pytest.skip("qemu-aarch64-static is not installed (scripts/setup.sh installs qemu-user-static)")
    proc = subprocess.run(["bash", str(REPO / "scripts/prepare_qemu_aarch64.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return Path(values["SYSROOT"]), Path(values["WHEELHOUSE"])


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_rpi4_bundle_self_test_runs_under_qemu_cortex_a72(prepared, tmp_path, fw_keys, int8):
    sysroot, wheelhouse = prepared
    gpk = helpers.tiny_gpk(tmp_path / "model.gpk", int8=int8)
    config = tmp_path / "daemon.toml"
    config.write_bytes(helpers.CONFIG)
    bundle = tmp_path / "rpi4.fw"
    from firmware.build import build
    manifest = build("rpi4", gpk, config, fw_keys["private"], bundle, wheelhouse, version="1.0.0")
    names = {w["name"] for w in manifest["wheels"]}
    assert {"numpy", "ai-edge-litert", "ganglion-edge"} <= names     # canonical (PEP 503) names
    assert all("aarch64" in w["file"] or "-any." in w["file"] for w in manifest["wheels"])

    root = tmp_path / "sdcard"
    install(bundle, root, fw_keys["public"], cross=True)          # an SD card for an aarch64 board
    site = root / "ganglion/slots/a/site"
    so = next(site.glob("ai_edge_litert/**/*.so"))
    assert b"\x7fELF" == so.read_bytes()[:4] and so.read_bytes()[18] == 183   # e_machine = EM_AARCH64

    python = [QEMU, "-L", str(sysroot), "-cpu", "cortex-a72", str(sysroot / "usr/bin/python3.11")]
    report = validate(root, python=python, timeout=600)
    print(json.dumps(report, indent=2))
    assert report["ok"], json.dumps(report, indent=2)
    assert "aarch64" in report["checks"]["selftest"] and "ai_edge_litert 2.3" in report["checks"]["selftest"]
    assert status(root)["slots"]["a"]["status"] == "valid"


def test_onnxruntime_bundle_self_test_runs_under_qemu(prepared, tmp_path, fw_keys):
    """The ONNX Runtime path (Jetson-style boards) on aarch64: a user board file derived from
    qemu-aarch64 with backend onnxruntime; ``build`` itself fetches the real aarch64 wheels with pip."""
    import boards
    from core import artifact
    sysroot, _ = prepared
    text = (boards.BOARDS_DIR / "qemu-aarch64.toml").read_text()
    text = (text.replace('name = "qemu-aarch64"', 'name = "qemu-aarch64-ort"')
                .replace('backend = "litert"', 'backend = "onnxruntime"\nexecution_providers = ["CPUExecutionProvider"]')
                .replace('delegate = "xnnpack"', '').replace('format = "tflite"', 'format = "onnx"')
                .replace('"ai-edge-litert>=1.2"', '"onnxruntime>=1.18"'))
    board = boards.load(_write(tmp_path, text))
    gpk = tmp_path / "m.gpk"
    artifact.write(gpk, {"name": "tiny", "version": "1.0.0",
                         "models": [{"format": "onnx", "file": "model.qdq.onnx"}]},
                   {"model.qdq.onnx": helpers.tiny_onnx()})
    config = tmp_path / "daemon.toml"
    config.write_bytes(helpers.CONFIG)
    from firmware.build import build
    # no wheelhouse: build runs pip download for the board's tags (cached outside git)
    manifest = build(board, gpk, config, fw_keys["private"], tmp_path / "ort.fw", None, version="1.0.0",
                     cache=Path.home() / ".cache/ganglion-wheels/qemu-aarch64-ort")
    assert any(w["name"] == "onnxruntime" and "aarch64" in w["file"] for w in manifest["wheels"])
    root = tmp_path / "sdcard"
    install(tmp_path / "ort.fw", root, fw_keys["public"], cross=True)
    python = [QEMU, "-L", str(sysroot), "-cpu", "cortex-a72", str(sysroot / "usr/bin/python3.11")]
    report = validate(root, python=python, timeout=600)
    assert report["ok"], json.dumps(report, indent=2)
    assert "onnxruntime" in report["checks"]["selftest"] and "aarch64" in report["checks"]["selftest"]


def _write(folder: Path, text: str) -> Path:
    path = folder / "qemu-aarch64-ort.toml"
    path.write_text(text)
    return path
