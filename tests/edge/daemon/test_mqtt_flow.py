"""The client-side bound on MQTT inputs held in memory, against a real mosquitto (2.0.11 sends far
past our Receive Maximum after the first batch: eclipse-mosquitto/mosquitto#2301).

A second scenario restarts the broker mid-backlog: nothing is lost, the bound still holds.

A daemon in this process (real Telemetry, a real worker process running a slow stand-in model)
gets a backlog of 2,000 distinct inputs. While it drains, a sampler reads how many inputs the
MQTT source holds unanswered (its own count, beside the telemetry gate's) every few
milliseconds. The bound must hold throughout, every input must be answered at least once with
the right output, the command connection must answer while inputs are paused, and the pause
must show up as an event and in the metrics.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid

import numpy as np
import pytest

from edge.daemon.app import Daemon
from edge.daemon.config import from_dict
from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
DEV = "flow"
TOPIC = f"ganglion/v1/{DEV}/in"
RECEIVE_MAX, MAX_HELD, INPUTS = 8, 32, 2000


def npy(i: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.full((1, 4), float(i), np.float32))
    return buf.getvalue()


class Stream:
    """Results (by input sha256) and events the device publishes."""

    def __init__(self, url: str):
        self.results: dict[str, list[dict]] = {}
        self.events: list[dict] = []
        self.metrics: list[dict] = []
        self.lock = threading.Lock()
        # a persistent session: what the device publishes while we reconnect waits for us
        self.client = MqttClient(parse_broker_url(url), client_id=f"stream-{uuid.uuid4().hex[:8]}",
                                 session_expiry=600, reconnect_min=0.1, reconnect_max=0.5)
        self.client.subscribe(f"ganglion/v1/{DEV}/+", self._on)
        self.client.subscribe(f"ganglion/v1/{DEV}/results/#", self._on)
        self.client.connect(10)

    def _on(self, msg) -> None:
        if msg.topic == TOPIC or msg.topic.endswith("/status"):
            return
        body = json.loads(msg.payload)
        with self.lock:
            if body["kind"] == "results":
                self.results.setdefault(body["data"].get("input_sha256"), []).append(body["data"])
            elif body["kind"] == "events":
                self.events.append(body["data"])
            elif body["kind"] == "metrics":
                self.metrics.append(body["data"])

    def answered(self) -> set[str]:
        with self.lock:
            return set(self.results)


class Sampler(threading.Thread):
    """Reads the source's and the gate's held counts every ``every`` seconds until stopped."""

    def __init__(self, source, gate, every: float = 0.002):
        super().__init__(daemon=True)
        self.source, self.gate, self.every = source, gate, every
        self.samples: list[tuple[int, int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((self.source.held, len(self.source._inbox), self.gate.held))
            time.sleep(self.every)


def start_daemon(url: str, tmp_path, delay: float) -> tuple[Daemon, object]:
    cfg = from_dict({
        "model": {"path": "slow-stand-in"}, "device_id": DEV,
        "workers": {"count": 1, "shutdown_s": 2.0},
        "batch": {"max_batch": 1, "queue_size": 2},
        "metrics": {"interval_s": 1.0},
        "telemetry": {"broker": url, "spool": str(tmp_path / "spool.db"), "spool_sync": "normal",
                      "input_receive_max": RECEIVE_MAX, "input_max_held": MAX_HELD,
                      "reconnect_min": 0.1, "reconnect_max": 0.5},
        "sources": [{"kind": "mqtt", "topic": TOPIC}], "sinks": [{"kind": "mqtt"}]}).require_model()
    daemon = Daemon(cfg, factory="tests.edge.daemon.crashy:slow",
                    factory_args={"delay_s": delay})
    telemetry = daemon.telemetry          # made from cfg's [telemetry], commands on it (tree.wire)
    return daemon.start(), telemetry


def test_a_backlog_of_2000_inputs_never_holds_more_than_the_bound(mosquitto, tmp_path):
    stream = Stream(mosquitto.url)
    payloads = [npy(i) for i in range(INPUTS)]
    want = {hashlib.sha256(p).hexdigest(): i for i, p in enumerate(payloads)}
    sender = MqttClient(parse_broker_url(mosquitto.url), client_id=f"sensor-{uuid.uuid4().hex[:8]}").connect(10)
    daemon, telemetry = start_daemon(mosquitto.url, tmp_path, delay=0.003)
    (source,) = daemon.sources
    sampler = Sampler(source, telemetry.inputs.gate)
    sampler.start()
    try:
        for p in payloads:
            sender.publish(TOPIC, p, qos=1)
        with Requester(mosquitto.url) as req:
            deadline = time.monotonic() + 20
            while not telemetry.inputs.gate.paused and time.monotonic() < deadline:
                time.sleep(0.005)
            pong = req.call(DEV, "ping", timeout=10)       # commands: the other connection
        assert pong["ok"] and pong["result"]["pong"]
        deadline = time.monotonic() + 90
        while stream.answered() < set(want) and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = set(want) - stream.answered()
        assert not missing, f"{len(missing)} inputs never answered"
        deadline = time.monotonic() + 10                  # a metrics record after the last pause
        while not any(m["telemetry"].get("inputs_pauses") for m in stream.metrics) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sampler.halt.set()
        sampler.join(5)
        daemon.stop()
        daemon.shutdown()
        sender.stop()
        stream.client.stop()
    gate = telemetry.inputs.gate.stats()
    held, inbox, gate_held = (max(column) for column in zip(*sampler.samples))
    print(json.dumps({"samples": len(sampler.samples), "source_held_max": source.held_max, "sampled_held_max": held,
                      "sampled_inbox_max": inbox, "bound": MAX_HELD, **{f"gate_{k}": v for k, v in gate.items()},
                      "over_receive_max": telemetry.inputs.over_receive_max,
                      "duplicates": sum(len(r) - 1 for r in stream.results.values())}))
    # The broker overshot Receive Maximum, and the bound held anyway, seen from both sides.
    assert telemetry.inputs.over_receive_max > 0
    assert gate["pauses"] >= 1 and len(sampler.samples) > 500
    assert max(held, source.held_max, inbox, gate_held, gate["held_max"]) <= MAX_HELD
    assert source.held_max == MAX_HELD            # it did fill up to the bound: the sampler had work
    for sha, i in want.items():                   # at least once, every result right
        assert all(r["ok"] and r["outputs"]["y"] == [2.0 * i] * 4 for r in stream.results[sha]), sha
    paused = [e for e in stream.events if e.get("event") == "input_paused"]
    assert paused and paused[0]["limit"] == MAX_HELD and paused[0]["held"] == MAX_HELD
    assert any(m["telemetry"].get("inputs_pauses", 0) >= 1 for m in stream.metrics)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_a_broker_restart_mid_backlog_loses_nothing_and_keeps_the_bound(mosquitto, tmp_path):
    count = 600
    stream = Stream(mosquitto.url)
    payloads = [npy(i) for i in range(count)]
    want = {hashlib.sha256(p).hexdigest(): i for i, p in enumerate(payloads)}
    sender = MqttClient(parse_broker_url(mosquitto.url), client_id=f"sensor-{uuid.uuid4().hex[:8]}").connect(10)
    daemon, telemetry = start_daemon(mosquitto.url, tmp_path, delay=0.003)
    (source,) = daemon.sources
    try:
        for p in payloads[:-1]:
            sender.publish(TOPIC, p, qos=1)
        sender.publish_wait(TOPIC, payloads[-1], timeout=30)   # the whole backlog is at the broker
        sender.stop()
        assert wait_for(lambda: len(stream.answered()) >= 100, 30)
        mosquitto.stop()                                       # persistence on: sessions survive
        time.sleep(1.0)
        mosquitto.start()
        assert wait_for(lambda: stream.answered() >= set(want), 60), len(set(want) - stream.answered())
        assert not daemon.stop_event.is_set() and daemon.root_exit is None     # the daemon stayed up
    finally:
        daemon.stop()
        daemon.shutdown()
        stream.client.stop()
    assert source.held_max <= MAX_HELD and telemetry.inputs.gate.held_max <= MAX_HELD
    for sha, i in want.items():
        assert all(r["ok"] and r["outputs"]["y"] == [2.0 * i] * 4 for r in stream.results[sha]), sha
