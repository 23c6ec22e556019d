"""The daemon-level OTA path, end to end: ``ganglion run --firmware-root --firmware-key --broker``,
then ``ganglion telemetry send-file D deploy-firmware app.fw`` with a newer signed bundle.

Real parts only: signed bundles built from a local wheelhouse, a device root in a temp folder,
a real mosquitto, the real CLI in subprocesses. The device installs into the other slot, reports
the phases as events, exits 75; the next start boots the new slot on trial and validates it -- or,
when the new slot's self-test fails, reverts it, exits 75 again, and comes back on the old slot,
which then refuses that version. A slot whose daemon cannot get ready is reverted at once; and
``deploy-firmware-url`` does the same from a download whose sha256 must match.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from firmware import install as fw_install
from firmware import status as fw_status
from firmware import validate as fw_validate
from tests.firmware import helpers

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
BIN = Path(sys.executable).parent
DEV = "ota-dev"
# A LiteRT stand-in that loads the model and serves the daemon like the real one, but computes
# zeros: the daemon starts fine on it, and only the golden self-test can tell the slot is bad.
ZEROS_INTERPRETER = '''
import numpy as np

def _detail(name, index, shape):
    return {"name": name, "index": index, "shape": np.array(shape), "shape_signature": np.array(shape),
            "dtype": np.float32, "quantization": (0.0, 0)}

class Interpreter:
    def __init__(self, model_content=None, model_path=None, **kwargs):
        self._batch = 1
    def allocate_tensors(self):
        pass
    def resize_tensor_input(self, index, shape):
        self._batch = int(shape[0])
    def get_input_details(self):
        return [_detail("x", 0, [self._batch, 8])]
    def get_output_details(self):
        return [_detail("y", 1, [self._batch, 4])]
    def set_tensor(self, index, value):
        pass
    def invoke(self):
        pass
    def get_tensor(self, index):
        return np.zeros((self._batch, 4), np.float32)
'''
# One that cannot serve the daemon at all (every model load fails): the new slot never gets ready.
UNLOADABLE_INTERPRETER = '''
class Interpreter:
    def __init__(self, *args, **kwargs):
        raise ValueError("this runtime cannot load any model")
'''


class Events:
    """Every firmware event the device publishes (persistent session: nothing missed across restarts)."""

    def __init__(self, url: str):
        self.items, self.cond = [], threading.Condition()
        self.client = MqttClient(parse_broker_url(url), client_id=f"ops-{uuid.uuid4().hex[:8]}",
                                 session_expiry=600, reconnect_min=0.1, reconnect_max=0.5)
        self.client.subscribe(f"ganglion/v1/{DEV}/events", self._on)
        self.client.connect(10)

    def _on(self, msg) -> None:
        data = json.loads(msg.payload)["data"]
        if data.get("event") == "firmware":
            with self.cond:
                self.items.append(data)
                self.cond.notify_all()

    def phases(self) -> list[str]:
        with self.cond:
            return [e["phase"] for e in self.items]

    def wait(self, phase: str, count: int = 1, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        with self.cond:
            while sum(e["phase"] == phase for e in self.items) < count:
                if not self.cond.wait(max(0.0, end - time.monotonic())) and time.monotonic() >= end:
                    pytest.fail(f"no {phase!r} event #{count}; got {[e['phase'] for e in self.items]}")
            return [e for e in self.items if e["phase"] == phase][count - 1]


@pytest.fixture
def device(tmp_path, mosquitto):
    """A device root with v1.0.0 installed and validated, its firmware key, a bundle factory."""
    keydir = tmp_path / "keys"
    keydir.mkdir()
    private, public = helpers.keypair(keydir)
    good = tmp_path / "wheels"
    helpers.make_wheel(good, "ganglion_probe", "1.0", {"ganglion_probe/__init__.py": "VALUE = 42\n"})
    root = tmp_path / "root"
    root.mkdir()
    fw_install.install(helpers.bundle(tmp_path / "b1", private, "1.0.0", wheelhouse=good), root, public)
    assert fw_validate.validate(root)["ok"]

    def make(version: str, broken: bool = False, unloadable: bool = False) -> Path:
        wheels = good
        if broken or unloadable:
            wheels = tmp_path / f"broken-wheels-{version}"
            runtime = ZEROS_INTERPRETER if broken else UNLOADABLE_INTERPRETER
            helpers.make_wheel(wheels, "ai_edge_litert", "9.9.9", {
                "ai_edge_litert/__init__.py": "", "ai_edge_litert/interpreter.py": runtime})
            for wheel in good.glob("*.whl"):
                (wheels / wheel.name).write_bytes(wheel.read_bytes())
        return helpers.bundle(tmp_path / f"b{version}", private, version, wheelhouse=wheels)

    events = Events(mosquitto.url)
    yield {"root": root, "public": public, "make": make, "events": events, "url": mosquitto.url,
           "spool": tmp_path / "spool.db"}
    events.client.stop()


def run_daemon(dev) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ganglion"), "run", "--firmware-root", str(dev["root"]),
                             "--firmware-key", str(dev["public"]), "--broker", dev["url"], "--device-id", DEV,
                             "--spool", str(dev["spool"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def send_file(dev, bundle: Path) -> dict:
    proc = subprocess.run([str(BIN / "ganglion"), "telemetry", "send-file", DEV, "deploy-firmware", str(bundle),
                           "--broker", dev["url"], "--timeout", "30"], capture_output=True, text=True, timeout=60)
    return {"code": proc.returncode, "reply": json.loads(proc.stdout[proc.stdout.index("{"):]), "err": proc.stderr}


def finish(proc, timeout: float = 30.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def stop(proc) -> tuple[int, str]:
    proc.terminate()
    return finish(proc)


def test_ota_installs_restarts_and_the_new_slot_validates_itself(device):
    events = device["events"]
    proc = run_daemon(device)
    try:
        assert events.wait("boot")["action"] == "boot"          # v1 is already valid
        sent = send_file(device, device["make"]("2.0.0"))
        assert sent["code"] == 0, sent
        assert sent["reply"]["result"] == {"outcome": "installed", "version": "2.0.0", "slot": "b",
                                           "restart": True}
        code, err = finish(proc)                               # the daemon asks to be started again
        assert code == 75, err[-3000:]
    finally:
        if proc.poll() is None:
            stop(proc)
    phases = events.phases()
    assert phases[phases.index("installing"):] [-2:] == ["switching", "installed"], phases
    progress = [e for e in events.items if e["phase"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"]
    state = fw_status.status(device["root"])
    assert state["active"] == "b" and state["slots"]["b"]["status"] == "unvalidated"

    proc = run_daemon(device)                                  # systemd's restart
    try:
        boot = events.wait("boot", 2)
        assert (boot["slot"], boot["version"], boot["action"]) == ("b", "2.0.0", "trial")
        validated = events.wait("validated")
        assert validated["slot"] == "b" and validated["version"] == "2.0.0"
        assert fw_status.status(device["root"])["slots"]["b"]["status"] == "valid"
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]                              # a validated slot keeps running


def test_a_new_slot_failing_its_self_test_is_reverted_on_restart_and_not_retried(device):
    events = device["events"]
    bad = device["make"]("2.1.0", broken=True)
    proc = run_daemon(device)
    try:
        events.wait("boot")
        sent = send_file(device, bad)
        assert sent["code"] == 0 and sent["reply"]["result"]["outcome"] == "installed", sent
        code, err = finish(proc)
        assert code == 75, err[-3000:]
        proc = run_daemon(device)                              # boots 2.1.0 on trial ...
        boot = events.wait("boot", 2)
        assert (boot["version"], boot["action"]) == ("2.1.0", "trial")
        reverted = events.wait("reverted")                     # ... its self-test fails: back to a
        assert reverted["failed_check"] == "selftest", reverted
        code, err = finish(proc)
        assert code == 75, err[-3000:]
        assert fw_status.status(device["root"])["active"] == "a"

        proc = run_daemon(device)                              # the old slot, as it was
        boot = events.wait("boot", 3)
        assert (boot["slot"], boot["version"], boot["action"]) == ("a", "1.0.0", "boot")
        again = send_file(device, bad)                         # the same bad version once more
        assert again["code"] != 0 and again["reply"]["error"]["code"] == "firmware.failed_version", again
        assert events.wait("refused")["error"]["code"] == "firmware.failed_version"
        time.sleep(1.5)
        assert proc.poll() is None                             # refused, not installed: no restart
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    assert fw_status.status(device["root"])["active"] == "a"
    assert events.phases().count("installing") == 1           # no install -> fail -> revert loop


def test_a_new_slot_whose_daemon_cannot_start_is_reverted_at_once(device):
    events = device["events"]
    proc = run_daemon(device)
    try:
        events.wait("boot")
        sent = send_file(device, device["make"]("3.0.0", unloadable=True))
        assert sent["code"] == 0 and sent["reply"]["result"]["outcome"] == "installed", sent
        code, err = finish(proc)
        assert code == 75, err[-3000:]
        proc = run_daemon(device)                  # trial boot: no worker ever gets ready
        code, err = finish(proc, timeout=60)
        assert code == 75, err[-3000:]             # reverted now, not after max_boots more starts
        state = fw_status.status(device["root"])
        assert state["active"] == "a" and "3.0.0" in state["failed_versions"], state
        proc = run_daemon(device)                  # back on 1.0.0; the revert event went out now
        reverted = events.wait("reverted")
        assert (reverted["version"], reverted["failed_check"]) == ("3.0.0", "start"), reverted
        boot = events.wait("boot", 3)
        assert (boot["slot"], boot["version"], boot["action"]) == ("a", "1.0.0", "boot")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]


def test_deploy_firmware_url_downloads_checks_and_installs(device, tmp_path):
    bundle = device["make"]("2.2.0")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(bundle.parent))
    handler.log_message = lambda *a: None
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{bundle.name}"
    events = device["events"]
    proc = run_daemon(device)
    try:
        events.wait("boot")

        def send(sha):
            out = subprocess.run([str(BIN / "ganglion"), "telemetry", "send", DEV, "deploy-firmware-url",
                                  "--args", json.dumps({"url": url, "sha256": sha}), "--broker", device["url"],
                                  "--timeout", "30"], capture_output=True, text=True, timeout=60)
            return out.returncode, json.loads(out.stdout[out.stdout.index("{"):])
        code, reply = send("0" * 64)                   # the announced hash must match the download
        assert code != 0 and reply["error"]["code"] == "firmware.hash", reply
        assert proc.poll() is None
        code, reply = send(hashlib.sha256(bundle.read_bytes()).hexdigest())
        assert code == 0 and reply["result"]["outcome"] == "installed" and reply["result"]["version"] == "2.2.0"
        code, err = finish(proc)
        assert code == 75, err[-3000:]
    finally:
        server.shutdown()
        server.server_close()
        if proc.poll() is None:
            stop(proc)
    assert fw_status.status(device["root"])["active"] == "b"
    assert not list((device["root"] / "ganglion" / "downloads").glob("*.fw"))   # the download is removed
