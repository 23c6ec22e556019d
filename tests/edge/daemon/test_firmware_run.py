"""``ganglion run --firmware-root``: the daemon boots the active A/B slot, serves its model, and
validates a slot on trial once the model is loaded. Real signed bundle, real install, real process."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware import install as fw_install
from firmware import status as fw_status
from tests.edge.daemon.helpers import drop_npy
from tests.firmware import helpers

pytestmark = pytest.mark.timeout(180)
GANGLION = str(Path(sys.executable).parent / "ganglion")


@pytest.fixture
def installed(tmp_path):
    keydir = tmp_path / "keys"
    keydir.mkdir()
    private, public = helpers.keypair(keydir)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    helpers.make_wheel(wheels, "ganglion_probe", "1.0", {"ganglion_probe/__init__.py": "VALUE = 42\n"})
    bundle = helpers.bundle(tmp_path / "b", private, "1.0.0", wheelhouse=wheels)
    root = tmp_path / "root"
    root.mkdir()
    fw_install.install(bundle, root, public)
    return root


def test_run_boots_the_trial_slot_serves_it_and_validates_it(installed, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out.jsonl"
    proc = subprocess.Popen([GANGLION, "run", "--firmware-root", str(installed), "--watch", str(inbox),
                             "--jsonl", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and fw_status.status(installed)["slots"]["a"].get("status") != "valid" \
                and proc.poll() is None:
            time.sleep(0.2)
        assert fw_status.status(installed)["slots"]["a"]["status"] == "valid"
        inbox.mkdir(exist_ok=True)
        drop_npy(inbox, "x.npy", np.ones((1, 8), np.float32))
        while time.monotonic() < deadline and not (out.exists() and out.read_text()):
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["ok"] and len(rec["outputs"]["y"]) == 4
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    phases = [e.get("phase") for e in events if e.get("event") == "firmware"]
    assert phases[:2] == ["boot", "validated"]


def _run_until_exit(args, timeout=90):
    proc = subprocess.run([GANGLION, "run", *args], capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return proc, [e for e in events if e.get("event") == "firmware"]


def test_firmware_key_is_used_to_recheck_the_trial_slot(installed, tmp_path):
    # The slot was signed by fw.key; a different firmware key must make validation fail (and revert),
    # which shows --firmware-key (not the model's --trusted-key) is what validation re-checks.
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_pub = helpers.keypair(other, "intruder")
    proc, events = _run_until_exit(["--firmware-root", str(installed), "--watch", str(tmp_path / "in"),
                                    "--firmware-key", str(wrong_pub)])
    assert proc.returncode == 75, proc.stderr
    reverted = [e for e in events if e.get("phase") == "reverted"]
    assert reverted and reverted[0]["failed_check"] == "files", events
    assert fw_status.status(installed)["slots"]["a"]["status"] != "valid"


def test_firmware_keys_config_section_resolves_relative_paths(tmp_path):
    from edge.daemon import config as cfgmod
    (tmp_path / "d.toml").write_text('[model]\npath = "m.tflite"\n[firmware]\ntrusted_keys = ["keys/fw.pub"]\n')
    cfg = cfgmod.load_toml(tmp_path / "d.toml")
    assert cfg.firmware.trusted_keys == (str(tmp_path / "keys/fw.pub"),)
    assert cfg.model.trusted_keys == ()
