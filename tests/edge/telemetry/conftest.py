"""Helpers for the telemetry scenarios: a consumer that records what the broker delivers, and a
device process (device_proc.py) that can be SIGKILLed mid-stream."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


class Collector:
    """Subscribes to a device's topics with a persistent MQTT 5 session (so messages published while
    it reconnects after a broker restart are queued for it) and keeps everything it receives."""

    def __init__(self, url: str, topic: str, *, persistent: bool = True):
        self.messages = []
        self._cond = threading.Condition()
        self.client = MqttClient(parse_broker_url(url), client_id=f"collector-{uuid.uuid4().hex[:8]}",
                                 session_expiry=3600 if persistent else 0, reconnect_min=0.1, reconnect_max=0.5)
        self.client.subscribe(topic, self._on)

    def _on(self, message):
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def __enter__(self):
        self.client.connect(10)
        return self

    def __exit__(self, *exc):
        self.client.stop()

    def records(self, suffix: str | None = None) -> list[dict]:
        with self._cond:
            msgs = list(self.messages)
        return [json.loads(m.payload) for m in msgs if suffix is None or m.topic.endswith(suffix)]

    def seqs(self) -> list[int]:
        return [r["seq"] for r in self.records() if isinstance(r.get("seq"), int)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True


class DeviceProcess:
    """``python device_proc.py`` in its own process: records telemetry, prints each seq it got."""

    def __init__(self, url: str, spool: Path, device: str, *, count: int, rate: float, keepalive: int = 30,
                 linger: float = 60.0):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "device_proc.py"), "--broker", url, "--spool", str(spool),
             "--device", device, "--count", str(count), "--rate", str(rate), "--keepalive", str(keepalive),
             "--linger", str(linger)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def seqs(self) -> list[int]:
        return [int(x.split()[1]) for x in list(self.lines) if x.startswith("seq ")]

    def wait_line(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(x) for x in list(self.lines)):
                return True
            if self.proc.poll() is not None and not self._reader.is_alive():
                return any(predicate(x) for x in list(self.lines))
            time.sleep(0.02)
        return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()        # SIGKILL: no clean shutdown, no DISCONNECT, no final flush
        self.proc.wait(10)
        self._reader.join(5)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


@pytest.fixture
def collector_factory():
    made = []

    def make(url, topic, **kw):
        c = Collector(url, topic, **kw).__enter__()
        made.append(c)
        return c
    yield make
    for c in made:
        c.__exit__(None, None, None)


@pytest.fixture
def device_process():
    made = []

    def make(*args, **kw):
        p = DeviceProcess(*args, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.kill()
