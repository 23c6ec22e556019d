"""MQTT inputs at least once, against a real mosquitto: a full queue holds inputs at the broker
(Receive Maximum, manual acks) instead of in paho's network thread, and inputs that were not
answered when the daemon was SIGKILLed are delivered again after the restart.

A clean stop (SIGTERM) behaves the same way: what it held is answered with a runtime.unavailable
or runtime.stopping error on the results stream, left unacked, and answered for real after the
restart.

The daemon runs as a subprocess (mqtt_input_proc.py) with a slow stand-in model, so the queue is
full for seconds; every input is distinct and every result carries its input's sha256, so the
test can count exactly which inputs were answered.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge.daemon.sources import RETRY_LATER
from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester
from tests.edge.daemon.helpers import sigterm

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[3]
DEV = "inq"
TOPIC = f"ganglion/v1/{DEV}/in"


def npy(i: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.full((1, 4), float(i), np.float32))
    return buf.getvalue()


class Results:
    """Every result the device publishes, keyed by the input's sha256 (persistent session)."""

    def __init__(self, url: str):
        self.by_sha: dict[str, list[dict]] = {}
        self.cond = threading.Condition()
        self.client = MqttClient(parse_broker_url(url), client_id=f"results-{uuid.uuid4().hex[:8]}",
                                 session_expiry=600, reconnect_min=0.1, reconnect_max=0.5)
        self.client.subscribe(f"ganglion/v1/{DEV}/results/#", self._on)
        self.client.connect(10)

    def _on(self, msg) -> None:
        data = json.loads(msg.payload)["data"]
        with self.cond:
            self.by_sha.setdefault(data.get("input_sha256"), []).append(data)
            self.cond.notify_all()

    def answered(self) -> set[str]:
        with self.cond:
            return set(self.by_sha)

    def wait(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                if not self.cond.wait(max(0.0, end - time.monotonic())) and time.monotonic() >= end:
                    return predicate()
        return True


def start_daemon(broker, tmp_path: Path, *, delay: float, queue: int = 2, receive_max: int = 4):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.edge.daemon.mqtt_input_proc", "--broker", broker.url, "--device", DEV,
         "--spool", str(tmp_path / "spool.db"), "--topic", TOPIC, "--delay", str(delay), "--queue", str(queue),
         "--receive-max", str(receive_max)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"daemon did not start: {line!r} {proc.communicate(timeout=10)[1][-3000:]}")
    return proc


stop = sigterm


@pytest.fixture
def publisher(mosquitto):
    client = MqttClient(parse_broker_url(mosquitto.url), client_id=f"sensor-{uuid.uuid4().hex[:8]}")
    client.connect(10)
    yield client
    client.stop()


def test_a_full_queue_waits_at_the_broker_and_commands_stay_prompt(mosquitto, publisher, tmp_path):
    results = Results(mosquitto.url)
    proc = start_daemon(mosquitto, tmp_path, delay=0.05, queue=2, receive_max=4)
    try:
        payloads = [npy(i) for i in range(60)]       # ~3 s of work for the slow model
        mids = [publisher.publish(TOPIC, p, qos=1) for p in payloads]
        assert len(set(mids)) == 60
        with Requester(mosquitto.url) as req:
            assert results.wait(lambda: len(results.by_sha) >= 1, 20)
            pong = req.call(DEV, "ping", timeout=10)
            answered_at_ping = len(results.answered())
            tel = req.call(DEV, "status", timeout=10)["result"]["telemetry"]
        # The command connection answered while most inputs still waited for the model ...
        assert pong["ok"] and pong["result"]["pong"]
        assert answered_at_ping < 50, answered_at_ping
        # ... while inputs were delivered but not yet acknowledged (they are acked once answered).
        # mosquitto 2.0.11 overshoots the Receive Maximum (#2301), so the input connection may be
        # paused at the client-side bound (4 x 4 here) right now; test_mqtt_flow.py covers that.
        assert tel["inputs_connected"] or tel["inputs_paused"], tel
        assert 1 <= tel["inputs_held"] <= tel["inputs_held_limit"] == 16, tel
        want = {hashlib.sha256(p).hexdigest() for p in payloads}
        assert results.wait(lambda: results.answered() >= want, 60), len(want - results.answered())
        for i, p in enumerate(payloads):
            (rec,) = results.by_sha[hashlib.sha256(p).hexdigest()]     # each exactly once: no restart
            assert rec["ok"] and rec["outputs"]["y"] == [2.0 * i] * 4
            assert rec["topic"] == TOPIC
    finally:
        err = stop(proc)
        results.client.stop()
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_inputs_unanswered_at_a_stop_are_answered_after_the_restart(how, mosquitto, publisher, tmp_path):
    results = Results(mosquitto.url)
    proc = start_daemon(mosquitto, tmp_path, delay=0.3, queue=2, receive_max=4)
    payloads = [npy(i) for i in range(16)]            # ~5 s of work
    want = {hashlib.sha256(p).hexdigest() for p in payloads}
    try:
        for p in payloads:
            publisher.publish_wait(TOPIC, p)          # the broker has every one of them
        assert results.wait(lambda: len(results.by_sha) >= 2, 30)
        proc.send_signal(how)
        code = proc.wait(30)
        assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL)
        time.sleep(0.5)                               # what a clean stop still published
        before = {sha for sha, recs in results.by_sha.items() if any(r["ok"] for r in recs)}
        assert len(before) < len(want)                # inputs were in flight or waiting at the broker
        time.sleep(0.5)
        proc = start_daemon(mosquitto, tmp_path, delay=0.05, queue=2, receive_max=4)
        def all_ok():
            return {sha for sha, recs in results.by_sha.items() if any(r["ok"] for r in recs)} >= want
        assert results.wait(all_ok, 60), len(want - results.answered())
        # What was delivered but not acked when the daemon stopped comes back flagged as a redelivery.
        redelivered = [r for recs in results.by_sha.values() for r in recs if r.get("redelivered")]
        assert redelivered, "the broker resent nothing"
        for i, p in enumerate(payloads):      # a clean stop answers what it held "stopping" first
            for r in results.by_sha[hashlib.sha256(p).hexdigest()]:
                assert r["outputs"]["y"] == [2.0 * i] * 4 if r["ok"] else r["error"]["code"] in RETRY_LATER, r
    finally:
        err = stop(proc)
        results.client.stop()
    assert proc.returncode == 0, err[-3000:]
