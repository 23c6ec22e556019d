"""Issue 9, items 8-9: the broker connection is visible -- a readable start line, console lines
and events on every change, a warning after a bounded time without a connection, and the state
(and the model version) in the status document."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.daemon import broker_watch
from edge.daemon.config import DaemonTelemetry
from tests.edge.conftest import make_gpk
from tests.edge.daemon.helpers import sigterm, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
GANGLION = str(Path(sys.executable).parent / "ganglion")


class _Lines:
    """Collects a subprocess's stderr lines on a thread."""

    def __init__(self, stream):
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(line) for line in stream], daemon=True).start()

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def test_start_line_and_connection_changes_on_the_console(mosquitto, tmp_path):
    gpk = make_gpk(tmp_path / "m.gpk")                               # manifest name dense, version 1
    proc = subprocess.Popen([GANGLION, "run", "--model", str(gpk), "--watch", str(tmp_path / "in"),
                             "--jsonl", str(tmp_path / "r.jsonl"), "--broker", mosquitto.url, "--device-id", "cam1",
                             "--spool", str(tmp_path / "s.db"), "--metrics-interval", "0.5"], stderr=subprocess.PIPE, text=True)
    err = _Lines(proc.stderr)
    try:
        assert wait_for(lambda: err.has("ganglion: ready in"), timeout=30), err.lines
        start = next(line for line in err.lines if "ganglion: ready in" in line)
        assert f"folder:{tmp_path / 'in'} -> {tmp_path / 'r.jsonl'}" in start
        assert "model dense 1 (litert" in start and f"broker {mosquitto.url} as cam1" in start
        assert wait_for(lambda: err.has(f"ganglion: connected to the broker {mosquitto.url}"), timeout=20)
        assert wait_for(lambda: any('"kind": "status"' in line and '"model_version": "1"' in line
                                    and '"connected": true' in line for line in err.lines), 15), err.lines
        mosquitto.stop()
        assert wait_for(lambda: err.has(f"ganglion: lost the connection to the broker {mosquitto.url}"), 20)
        assert wait_for(lambda: any('"event": "broker", "state": "disconnected"' in line for line in err.lines), 5)
    finally:
        sigterm(proc)


class _Telemetry:
    def __init__(self):
        self.connected = False

    def stats(self):
        return {"connected": self.connected, "last_error": "connection refused", "spool_depth": 7}


class _Daemon:
    def __init__(self):
        self.telemetry, self.events = _Telemetry(), []
        self.cfg = type("C", (), {"telemetry": DaemonTelemetry(broker="mqtt://nowhere:1883")})()

    def event(self, ev):
        self.events.append(ev)


def test_no_connection_for_the_bound_warns_once_per_outage(capsys, monkeypatch):
    monkeypatch.setattr(broker_watch, "POLL_S", 0.02)
    daemon, stop = _Daemon(), threading.Event()
    thread = threading.Thread(target=broker_watch.watch, args=(daemon, stop, 0.2))
    thread.start()
    try:
        assert wait_for(lambda: [e for e in daemon.events if e["event"] == "broker_unreachable"], 5)
        time.sleep(0.4)
        assert [e["event"] for e in daemon.events] == ["broker_unreachable"]     # once, and no fake change
        daemon.telemetry.connected = True
        assert wait_for(lambda: daemon.events[-1].get("state") == "connected", 5)
    finally:
        stop.set()
        thread.join()
    err = capsys.readouterr().err
    assert "warning: no connection to the broker mqtt://nowhere:1883" in err and "(connection refused)" in err
    assert "7 records" in err and "ganglion: connected to the broker mqtt://nowhere:1883" in err
