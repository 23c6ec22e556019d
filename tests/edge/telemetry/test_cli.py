"""`ganglion telemetry watch|send|send-file` as a user runs them (subprocess, real broker, real device)."""
import json
import os
import subprocess
import sys
import time

import pytest

from core import keys
from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.mqtt import Message
from edge.telemetry.watch import Fleet, render_table

pytestmark = pytest.mark.mqtt


def ganglion(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, GANGLION_BROKER=""))


@pytest.fixture
def device(mosquitto, tmp_path):
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url), "cli-dev", tmp_path / "s.db")
    tm.record("status", {"model": "digits"})
    tm.register_transfer("deploy", lambda path, info, args: {"got": path.stat().st_size})
    tm.start()
    assert tm.wait_connected(10)
    yield tm
    tm.stop(flush_timeout=0.5)


def test_send_prints_the_reply_and_exit_code_follows_it(mosquitto, device, tmp_path):
    ok = ganglion("telemetry", "send", "cli-dev", "ping", "--broker", mosquitto.url)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["result"]["pong"] is True
    unknown = ganglion("telemetry", "send", "cli-dev", "selfdestruct", "--broker", mosquitto.url)
    assert unknown.returncode == 6 and "command.unknown_verb" in unknown.stderr
    bad = ganglion("telemetry", "send", "cli-dev", "ping", "--args", "[1]", "--broker", mosquitto.url)
    assert bad.returncode == 2 and "--args must be a JSON object" in bad.stderr
    nobroker = ganglion("telemetry", "send", "cli-dev", "ping", "--broker", "http://x")
    assert nobroker.returncode == 2 and "usage.broker_url" in nobroker.stderr
    down = ganglion("telemetry", "send", "cli-dev", "ping", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1")
    assert down.returncode == 6 and "telemetry.broker" in down.stderr and "Traceback" not in down.stderr
    offline = ganglion("telemetry", "send", "nobody-home", "ping", "--broker", mosquitto.url, "--timeout", "0.5")
    assert offline.returncode == 6 and "telemetry.timeout" in offline.stderr


def test_signed_send_and_send_file(mosquitto, tmp_path):
    priv, pub = keys.generate(tmp_path / "ops.key")
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url, command_keys=(str(pub),)), "signed", tmp_path / "s.db")
    tm.register_transfer("deploy", lambda path, info, args: {"got": path.stat().st_size, "slot": args.get("slot")})
    tm.start()
    try:
        assert tm.wait_connected(10)
        refused = ganglion("telemetry", "send", "signed", "ping", "--broker", mosquitto.url)
        assert refused.returncode == 6 and "command.unauthorized" in refused.stderr
        ok = ganglion("telemetry", "send", "signed", "ping", "--key", str(priv), "--broker", mosquitto.url)
        assert ok.returncode == 0, ok.stderr
        blob = tmp_path / "fw.bin"
        blob.write_bytes(os.urandom(50_000))
        sent = ganglion("telemetry", "send-file", "signed", "deploy", str(blob), "--chunk-size", "8192",
                        "--args", '{"slot": "b"}', "--key", str(priv), "--broker", mosquitto.url)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["result"] == {"got": 50_000, "slot": "b"}
    finally:
        tm.stop(flush_timeout=0.5)


def test_watch_once_json_and_table(mosquitto, device):
    # status is retained (seen at once); metrics are live, so they are sent while watch listens
    watch = subprocess.Popen([sys.executable, "-m", "edge.cli", "telemetry", "watch", "--broker", mosquitto.url,
                              "--once", "--json", "--wait", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        mosquitto.wait_subscribed("ganglion-watch-", "ganglion/v1/+/metrics")
        # the daemon's metric names (edge/daemon/metrics.py)
        device.record("metrics", {"latency_p50_ms": 1.0, "latency_p95_ms": 2.5, "throughput": 480.0,
                                  "errors": 0, "total_errors": 3})
        stdout, stderr = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, stderr
    rows = json.loads(stdout)
    assert [r["device"] for r in rows] == ["cli-dev"]
    row = rows[0]
    assert row["online"] is True and row["model"] == "digits" and row["p95_ms"] == 2.5
    assert row["throughput"] == 480.0 and row["errors"] == 3 and row["last_seq"] == 1
    table = ganglion("telemetry", "watch", "--broker", mosquitto.url, "--duration", "1.2", "--interval", "0.5")
    assert table.returncode == 0 and "cli-dev" in table.stdout and "DEVICE" in table.stdout


def test_fleet_ignores_garbage_and_tracks_offline():
    fleet = Fleet()
    fleet.on_message(Message("ganglion/v1/a/status", b"not json", 1, True))
    fleet.on_message(Message("ganglion/v1/a/metrics", b'{"data": [1]}', 1, False))
    fleet.on_message(Message("elsewhere/x", b"{}", 1, False))
    assert fleet.bad_messages == 2 and fleet.snapshot() == []
    fleet.on_message(Message("ganglion/v1/b/status",
                             json.dumps({"seq": None, "ts": 100.0, "data": {"state": "offline"}}).encode(), 1, True))
    fleet.on_message(Message("ganglion/v1/b/events",
                             json.dumps({"seq": 9, "ts": 101.0, "data": {"event": "crash"}}).encode(), 1, False))
    (row,) = fleet.snapshot()
    assert row["online"] is False and row["errors"] == 1 and row["last_seq"] == 9
    fleet.on_message(Message("ganglion/v1/b/metrics", json.dumps(
        {"seq": 10, "ts": 102.0, "data": {"latency_ms": {"p95": 4.0}, "errors": 7}}).encode(), 1, False))
    assert fleet.snapshot()[0]["p95_ms"] == 4.0 and fleet.snapshot()[0]["errors"] == 7
    text = render_table(fleet.snapshot(), now=112.0)
    assert "NO" in text and "10s ago" in text


def test_send_timeout_bounds_the_whole_call(mosquitto):
    """Issue 9: ``--timeout 3`` took 6 s (an internal retry waited the full timeout again)."""
    start = time.monotonic()
    res = ganglion("telemetry", "send", "nobody-here", "ping", "--broker", mosquitto.url, "--timeout", "2")
    took = time.monotonic() - start
    assert res.returncode == 6 and "telemetry.timeout" in res.stderr, res.stderr
    assert took < 2 * 2, f"{took:.1f} s for --timeout 2"          # one budget, not one per try


def test_watch_shows_the_model_version_from_status():
    fleet = Fleet()
    fleet.on_message(Message("ganglion/v1/cam1/status", json.dumps(
        {"ts": 100.0, "data": {"state": "online", "model": "digits_cnn", "model_version": "1.2.0"}}).encode(), 1, True))
    (row,) = fleet.snapshot()
    assert row["version"] == "1.2.0"
    assert "digits_cnn 1.2.0" in render_table(fleet.snapshot(), now=101.0)


@pytest.mark.parametrize("args", [
    ("telemetry", "send", "cam.1", "ping"),
    ("telemetry", "send-file", "cam.1", "deploy", __file__),
    ("telemetry", "watch", "--once", "--device", "ok1", "--device", "cam.1"),
])
def test_device_id_arguments_are_checked_before_any_broker(args):
    # the port is closed: the id rule, not the connection, must be what fails (exit 2, not 6)
    out = ganglion(*args, "--broker", "mqtt://127.0.0.1:9")
    assert out.returncode == 2, out.stderr
    assert "usage.device_id" in out.stderr and "'.'" in out.stderr, out.stderr
