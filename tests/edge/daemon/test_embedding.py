"""``Daemon(cfg)`` embedded in a Python program is wired like ``ganglion run`` (``edge/daemon/tree.py``).

A daemon built from a config with a broker gets its telemetry client, its command handlers and
its results on MQTT without any of the CLI's code: a real mosquitto, an operator's ``Requester``
and a subscriber check that it answers ``ping``, ``config.get``/``config.set`` and publishes the
result of ``Daemon.infer``, like the subprocess in ``tests/edge/test_daemon_mqtt.py``.
"""
import json
import threading
import uuid

import numpy as np
import pytest

from core import artifact
from edge.daemon import tree
from edge.daemon.app import Daemon
from edge.daemon.config import from_dict
from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester
from tests.edge import models

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(120)]
DEV = "embedded1"


def _config(tmp_path, broker: str | None):
    model = tmp_path / "dense.gpk"
    artifact.write(model, {"name": "dense", "version": "1", "models": [{"format": "tflite", "file": "m.tflite"}]},
                   {"m.tflite": models.dense_tflite(0)})
    telemetry = {"broker": broker, "spool": str(tmp_path / "spool.db")} if broker else {}
    return from_dict({"model": {"path": str(model)}, "device_id": DEV, "workers": {"shutdown_s": 2.0},
                      "metrics": {"interval_s": 3600}, "telemetry": telemetry,
                      "sinks": [{"kind": "mqtt"}] if broker else []}).require_model()


def test_an_embedded_daemon_answers_commands_and_publishes_results_over_mqtt(mosquitto, tmp_path):
    results, got = [], threading.Event()

    def on_result(msg):
        results.append(json.loads(msg.payload))
        got.set()
    sub = MqttClient(parse_broker_url(mosquitto.url), client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.subscribe(f"ganglion/v1/{DEV}/results/#", on_result)
    sub.connect()
    daemon = Daemon(_config(tmp_path, mosquitto.url)).start()
    try:
        assert daemon.telemetry is not None                  # made from [telemetry], as ganglion run does
        with Requester(mosquitto.url) as req:
            assert req.call(DEV, "ping", timeout=20)["result"]["pong"]
            assert req.call(DEV, "config.get", {"key": "batch.max_batch"})["result"]["value"] == 8
            assert req.call(DEV, "config.set", {"key": "batch.max_batch", "value": 2})["result"]["applied"] == "now"
        assert daemon.cfg.batch.max_batch == 2
        x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
        r = daemon.infer(x, timeout=20)
        assert r.ok
        np.testing.assert_allclose(r.outputs["y"], models.reference(x, seed=0), rtol=1e-5, atol=1e-5)
        assert got.wait(20), "no result on MQTT"
        np.testing.assert_allclose(np.asarray(results[0]["data"]["outputs"]["y"], np.float32),
                                   r.outputs["y"][0], rtol=1e-5, atol=1e-5)
    finally:
        daemon.stop()
        daemon.shutdown()
        sub.stop()


def test_without_a_broker_there_is_no_telemetry_and_an_explicit_none_wins(tmp_path, mosquitto):
    assert Daemon(_config(tmp_path, None), dry_run=True).telemetry is None
    assert Daemon(_config(tmp_path, mosquitto.url), telemetry=None, dry_run=True).telemetry is None
    assert tree.make_telemetry(_config(tmp_path, None)) is None
