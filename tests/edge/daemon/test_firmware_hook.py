"""``ganglion run --firmware-root`` (``firmware/daemon_hook.py``) with the firmware follow-ups:
the trial slot's broker check logs in with the daemon's own ``[telemetry]`` user name and password
(real mosquitto refusing anonymous clients), a refused login is reported with its CONNACK reason
and class, and a root installed for a board with its own ``[slots]`` layout boots and validates
with no board named at all (the root's board record)."""
import json
import subprocess
import time

import pytest

import boards
from firmware import install as fw_install
from firmware import status as fw_status
from firmware.rootboard import resolve
from tests.edge.daemon.test_firmware_run import GANGLION, installed  # noqa: F401 - the fixture
from tests.firmware import helpers

pytestmark = pytest.mark.timeout(180)


def _config(tmp_path, url, username=None, password=None) -> str:
    lines = ['device_id = "auth-dev"', "", "[workers]", "count = 1", "", "[telemetry]", f'broker = "{url}"',
             f'spool = "{tmp_path / "spool.db"}"']
    lines += [f'username = "{username}"'] if username else []
    lines += [f'password = "{password}"'] if password else []
    path = tmp_path / "daemon.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _run_until(root, tmp_path, config, slot="a", timeout=90):
    """Start the daemon; stop it once ``slot`` is valid or it exits. (returncode, stderr, firmware events)."""
    args = [GANGLION, "run", "--firmware-root", str(root), "--watch", str(tmp_path / "in")]
    proc = subprocess.Popen(args + (["--config", config] if config else []),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None \
            and fw_status.status(root)["slots"][slot].get("status") != "valid":
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=30)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return proc.returncode, err, [e for e in events if e.get("event") == "firmware"]


@pytest.mark.mqtt
def test_trial_slot_logs_in_with_the_telemetry_credentials(installed, tmp_path, mosquitto_auth):  # noqa: F811
    config = _config(tmp_path, mosquitto_auth.url, "device", "s3cret")
    code, err, _ = _run_until(installed, tmp_path, config)
    assert fw_status.status(installed)["slots"]["a"]["status"] == "valid", err
    assert code == 0, err


@pytest.mark.mqtt
def test_a_refused_login_reverts_with_the_connack_reason_as_transient(installed, tmp_path,  # noqa: F811
                                                                      mosquitto_auth):
    config = _config(tmp_path, mosquitto_auth.url, "device", "wrong")
    code, err, events = _run_until(installed, tmp_path, config)
    assert code == 75, err
    reverted = [e for e in events if e.get("phase") == "reverted"]
    assert reverted and reverted[0]["failed_check"] == "broker", events
    assert reverted[0]["error_code"] == "firmware.broker_auth" and reverted[0]["failure_class"] == "transient"
    assert "CONNACK reason 0x87 'not authorized'" in reverted[0]["reason"] and "wrong" not in reverted[0]["reason"]
    info = fw_status.status(installed)
    assert info["slots"]["a"]["failure_class"] == "transient" and info["retries"]["1.0.0"]["count"] == 1


def test_a_custom_layout_root_runs_without_naming_its_board(tmp_path):
    text = (boards.BOARDS_DIR / "x86_64-generic.toml").read_text()
    for old, new in (('base = "ganglion"', 'base = "data/fw"'), ('a = "ganglion/slots/a"', 'a = "data/fw/one"'),
                     ('b = "ganglion/slots/b"', 'b = "data/fw/two"'),
                     ('state = "ganglion/state.json"', 'state = "data/fw/state.json"')):
        text = text.replace(old, new)
    board_path = tmp_path / "custom.toml"
    board_path.write_text(text)
    private, public = helpers.keypair(tmp_path)
    wheels = tmp_path / "wheels"
    helpers.make_wheel(wheels, "ganglion_probe", "1.0", {"ganglion_probe/__init__.py": "VALUE = 42\n"})
    bundle = helpers.bundle(tmp_path / "b", private, "1.0.0", wheelhouse=wheels)
    root = tmp_path / "root"
    root.mkdir()
    fw_install.install(bundle, root, public, layout=resolve(root, boards.load(str(board_path))))
    code, err, _ = _run_until(root, tmp_path, None)
    state = json.loads((root / "data/fw/state.json").read_text())
    assert state["slots"]["a"]["status"] == "valid", err
    assert not (root / "ganglion/state.json").exists()
