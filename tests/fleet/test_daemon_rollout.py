"""The hub against a real ``ganglion run`` daemon: signed commands only, a shadow canary on live
MQTT inputs, the deploy transfer, and the new version confirmed by the daemon's own status/metrics."""
import threading
import uuid

import numpy as np
import pytest

from core import artifact
from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from core import keys
from tests.edge import models
from tests.edge.test_daemon_mqtt import _npy
from tests.fleet.procs import Procs, hub_client, wait_for
from tests.fleet.test_rollouts import finished

pytestmark = [pytest.mark.timeout(240), pytest.mark.mqtt, pytest.mark.slow]
DEV = "cam1"


def _gpk(path, version):      # same weights, new version: a shadow run must agree fully
    artifact.write(path, {"name": "dense", "version": version, "models": [{"format": "tflite", "file": "m.tflite"}]},
                   {"m.tflite": models.dense_tflite(0)})
    return path


def test_hub_rolls_out_to_a_real_daemon_with_a_shadow_canary(tmp_path, mosquitto):
    hub_key, hub_pub = keys.generate(tmp_path / "hub.key")
    v1, v2 = _gpk(tmp_path / "v1.gpk", "1"), _gpk(tmp_path / "v2.gpk", "2")
    config = tmp_path / "daemon.toml"
    config.write_text(f'device_id = "{DEV}"\n[model]\npath = "{v1}"\n[metrics]\ninterval_s = 0.5\n'
                      f'[telemetry]\nbroker = "{mosquitto.url}"\ncommand_keys = ["{hub_pub}"]\n'
                      f'spool = "{tmp_path / "spool.db"}"\n')
    procs = Procs(tmp_path, mosquitto.url)
    feeder = MqttClient(parse_broker_url(mosquitto.url), client_id=f"feeder-{uuid.uuid4().hex[:6]}").connect()
    stop = threading.Event()
    try:
        daemon = procs.spawn_raw("daemon", "run", "--config", str(config), "--mqtt-input", f"ganglion/v1/{DEV}/in")
        procs.hub("--signing-key", str(hub_key), "--latency-ratio", "20")   # latency policy: test_plan.py
        threading.Thread(target=lambda: [feeder.publish(f"ganglion/v1/{DEV}/in", _npy(np.ones((1, 4), np.float32)))
                                         for _ in iter(lambda: stop.wait(0.05), True)], daemon=True).start()
        with hub_client(procs.url) as client:
            row = wait_for(lambda: client.call("device", {"id": DEV}), what="the daemon in the registry")
            wait_for(lambda: client.call("device", {"id": DEV})["model_sha256"] == artifact.sha256(v1.read_bytes()),
                     what="status with model_sha256")
            dep_id = procs.cli("deploy", str(v2), "--to", DEV, "--waves", "100", "--shadow", "3").stdout.strip()
            st = wait_for(lambda: finished(procs, dep_id), timeout=120, what="the rollout to the daemon")
            member = st["devices"][0]
            assert st["counts"] == {"updated": 1}, st
            assert member["shadow"]["inputs"] == 3 and member["shadow"]["top1_agreement"] == 1.0
            row = client.call("device", {"id": DEV})
            assert row["model_version"] == "2" and row["model_sha256"] == artifact.sha256(v2.read_bytes())
        assert daemon.poll() is None
    except BaseException:
        print(procs.logs())
        raise
    finally:
        stop.set()
        feeder.stop()
        procs.stop_all()
