"""``ganglion run --broker`` end to end against a real mosquitto (tests/fixtures/broker.py).

The daemon runs as a subprocess exactly as on a device; the test is a fleet operator: it feeds
the MQTT input topic, reads results/events/status with their sequence numbers, and drives the
daemon's commands (ping, config.get/set, reload, deploy) through the telemetry Requester.
"""
import io
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from core import artifact
from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester
from tests.edge import models
from tests.fixtures import logged

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(180)]
GANGLION = str(Path(sys.executable).parent / "ganglion")
DEV = "dev1"


class Watcher:
    """Collects every message under ganglion/v1/<device>/# (or under ``levels`` of it only), decoded."""

    def __init__(self, url, device=DEV, levels=("#",), qos=1):
        self.msgs, self.lock = [], threading.Lock()
        self.client = MqttClient(parse_broker_url(url), client_id=f"test-watcher-{uuid.uuid4().hex[:8]}")
        for level in levels:
            self.client.subscribe(f"ganglion/v1/{device}/{level}", self._on, qos=qos)
        self.client.connect()
        for level in levels:            # a NATS node refuses QoS 1 subscriptions while JetStream re-forms
            assert self.client.wait_granted(f"ganglion/v1/{device}/{level}", 30), level

    def _on(self, m):
        if m.topic.endswith("/in"):                              # our own inputs
            return
        with self.lock:
            self.msgs.append((m.topic, json.loads(m.payload)))

    def of(self, kind):
        with self.lock:
            return [p for t, p in self.msgs if p.get("kind") == kind]

    def wait(self, cond, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond(self):
                return True
            time.sleep(0.05)
        return False


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _gpk(path, seed):
    artifact.write(path, {"name": "dense", "version": str(seed), "models": [
        {"format": "tflite", "file": "model.tflite"}]}, {"model.tflite": models.dense_tflite(seed)})
    return path


def test_daemon_over_mqtt_results_commands_reload_and_deploy(mosquitto, tmp_path):
    model = _gpk(tmp_path / "dense.gpk", seed=0)
    watcher = Watcher(mosquitto.url)
    log = tmp_path / "daemon.log"
    proc = logged.spawn([GANGLION, "run", "--model", str(model), "--broker", mosquitto.url, "--device-id", DEV,
                         "--mqtt-input", f"ganglion/v1/{DEV}/in", "--spool", str(tmp_path / "spool.db"),
                         "--metrics-interval", "0.5"], log)
    try:
        assert watcher.wait(lambda w: any(s["data"].get("state") == "online" and s["data"].get("model")
                                          for s in w.of("status"))), logged.tail(log)
        xs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
        for x in xs:
            watcher.client.publish_wait(f"ganglion/v1/{DEV}/in", _npy(x[None]))
        watcher.client.publish_wait(f"ganglion/v1/{DEV}/in", b"[[1, 2, 3, 4]]")
        watcher.client.publish_wait(f"ganglion/v1/{DEV}/in", b"not a tensor")
        assert watcher.wait(lambda w: len(w.of("results")) == 12)
        results = watcher.of("results")
        ok = [r["data"] for r in results if r["data"]["ok"]]
        assert len(ok) == 11
        got = np.array([r["outputs"]["y"] for r in ok[:10]])
        np.testing.assert_allclose(got, models.reference(xs), rtol=1e-5, atol=1e-5)
        bad = next(r["data"] for r in results if not r["data"]["ok"])
        assert bad["error"]["code"] == "input.raw_size"

        replies = []
        watcher.client.subscribe("test/replies/#", lambda m: replies.append((m.correlation, json.loads(m.payload))))
        watcher.client.publish_wait(f"ganglion/v1/{DEV}/in", _npy(xs[:1]), response_topic="test/replies/me",
                                    correlation=b"req-42")
        assert watcher.wait(lambda w: replies, timeout=20)
        corr, body = replies[0]
        assert corr == b"req-42" and body["ok"]
        np.testing.assert_allclose(body["outputs"]["y"], models.reference(xs[:1])[0], rtol=1e-5, atol=1e-5)
        assert watcher.wait(lambda w: len(w.of("results")) == 13)   # and on the stream, with its seq

        with Requester(mosquitto.url) as req:
            assert req.call(DEV, "ping")["result"]["pong"]
            assert req.call(DEV, "config.get", {"key": "batch.max_batch"})["result"]["value"] == 8
            assert req.call(DEV, "config.set", {"key": "batch.max_batch", "value": 2})["result"]["applied"] == "now"
            refused = req.call(DEV, "config.set", {"key": "batch.max_batch", "value": "x"})
            assert not refused["ok"] and refused["error"]["code"] == "usage.config"
            assert req.call(DEV, "reload", timeout=30)["result"]["reloaded"]
            broken = req.call(DEV, "reload", {"model": str(tmp_path / "missing.gpk")}, timeout=30)
            assert not broken["ok"]
            new = _gpk(tmp_path / "dense-v2.gpk", seed=1)
            deployed = req.send_file(DEV, "deploy", new, timeout=30)
            assert deployed["ok"], deployed
        watcher.client.publish_wait(f"ganglion/v1/{DEV}/in", _npy(xs[:1]))
        assert watcher.wait(lambda w: len(w.of("results")) == 14)
        last = watcher.of("results")[-1]["data"]
        np.testing.assert_allclose(last["outputs"]["y"], models.reference(xs[:1], seed=1)[0], rtol=1e-5, atol=1e-5)
        assert watcher.wait(lambda w: len(w.of("metrics")) >= 1)
        metric = watcher.of("metrics")[-1]["data"]
        assert metric["model"] == "dense" and "latency_p95_ms" in metric and metric["rss_mb"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, logged.tail(log)
    assert watcher.wait(lambda w: w.of("status")[-1]["data"]["state"] == "offline", timeout=10)
    events = [e["data"]["event"] for e in watcher.of("events")]
    assert "reload" in events and "deploy" in events
    seqs = [m["seq"] for m in watcher.of("results") + watcher.of("events") + watcher.of("metrics")]
    assert len(seqs) == len(set(seqs))                          # no duplicates across streams
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1))  # and no gaps
    watcher.client.stop()
