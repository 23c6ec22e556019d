"""``ganglion run --firmware-root`` whose telemetry broker is TLS-only: the trial slot's broker
check dials mqtts with the daemon's own CA and client certificate (and fails with the wrong CA)."""
import json
import subprocess
import time

import pytest

from firmware import status as fw_status
from tests.edge.daemon.test_firmware_run import GANGLION, installed  # noqa: F401 - the fixture
from tests.fixtures.broker import make_tls_files

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(180)]


def _config(tmp_path, broker, ca_file) -> str:
    path = tmp_path / "daemon.toml"
    path.write_text(f'device_id = "tls-dev"\n\n[workers]\ncount = 1\n\n[telemetry]\nbroker = "{broker.url}"\n'
                    f'ca_file = "{ca_file}"\ncert_file = "{broker.client_cert}"\nkey_file = "{broker.client_key}"\n'
                    f'spool = "{tmp_path / "spool.db"}"\n')
    return str(path)


def _run(installed, tmp_path, config):  # noqa: F811 - the fixture's value
    proc = subprocess.Popen([GANGLION, "run", "--firmware-root", str(installed), "--config", config,
                             "--watch", str(tmp_path / "in")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return proc, err, [e for e in events if e.get("event") == "firmware"]


def test_trial_slot_validates_against_a_tls_only_broker(installed, tmp_path, mosquitto_tls):  # noqa: F811
    proc = subprocess.Popen([GANGLION, "run", "--firmware-root", str(installed), "--config",
                             _config(tmp_path, mosquitto_tls, mosquitto_tls.ca_file), "--watch", str(tmp_path / "in")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None \
                and fw_status.status(installed)["slots"]["a"].get("status") != "valid":
            time.sleep(0.2)
        assert fw_status.status(installed)["slots"]["a"]["status"] == "valid"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_trial_slot_with_the_wrong_ca_is_reverted(installed, tmp_path, mosquitto_tls):  # noqa: F811
    other = make_tls_files(tmp_path / "other", client=False)
    proc, err, events = _run(installed, tmp_path, _config(tmp_path, mosquitto_tls, other["ca"]))
    assert proc.returncode == 75, err
    reverted = [e for e in events if e.get("phase") == "reverted"]
    assert reverted and reverted[0]["failed_check"] == "broker", events
    assert "certificate verify failed" in reverted[0]["reason"]
