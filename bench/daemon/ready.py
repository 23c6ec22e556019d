"""Time to ready: ``ganglion run --model M --watch DIR`` as a subprocess, spawn -> READY=1 on a real
NOTIFY_SOCKET (model loaded in a worker); and, with a private mosquitto when one is installed,
spawn -> the retained status "online" naming the model, seen by a subscriber.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from daemon.common import GANGLION



def ready_time(model: str, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "n.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(30)
        t0 = time.monotonic()
        proc = subprocess.Popen([GANGLION, "run", "--model", model, "--watch", os.path.join(tmp, "in"),
                                 "--threads", str(threads)], env=dict(os.environ, NOTIFY_SOCKET=path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            return time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(30)
            sock.close()


def ready_online_time(model: str, threads: int, broker) -> float | None:
    """Spawn -> the retained status 'online' with the model named, seen by a subscriber."""
    if broker is None:
        return None
    from edge.telemetry.config import parse_broker_url
    from edge.telemetry.mqtt import MqttClient
    device = f"bench{os.getpid()}{int(time.time() * 1000) % 100000}"
    seen = threading.Event()

    def on_status(msg):
        data = json.loads(msg.payload).get("data", {})
        if data.get("state") == "online" and data.get("model"):
            seen.set()
    sub = MqttClient(parse_broker_url(broker.url), client_id=f"sub-{device}")
    sub.subscribe(f"ganglion/v1/{device}/status", on_status)
    sub.connect()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        proc = subprocess.Popen([GANGLION, "run", "--model", model, "--broker", broker.url, "--device-id", device,
                                 "--spool", os.path.join(tmp, "spool.db"), "--threads", str(threads)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return time.monotonic() - t0 if seen.wait(30) else float("nan")
        finally:
            proc.terminate()
            proc.wait(30)
            sub.stop()


def start_broker(workdir: Path):
    """A private mosquitto (tests/fixtures/broker.py), or None when it is not installed."""
    from tests.fixtures.broker import MOSQUITTO, Mosquitto
    if not os.access(MOSQUITTO, os.X_OK):
        return None
    return Mosquitto(workdir / "mosquitto").start()
