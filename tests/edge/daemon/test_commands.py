"""Command handlers (reload, config.get/set, deploy) called directly on a running daemon.

The MQTT transport around them is covered by tests/edge/test_daemon_mqtt.py; here the logic:
a bad model never replaces a good one, unsigned artifacts are refused when keys are configured.
"""

import numpy as np
import pytest

from core import artifact, keys
from core.errors import GanglionError, UsageError
from edge.daemon import commands
from tests.edge import models
from tests.edge.daemon.helpers import Collector, make_daemon

pytestmark = pytest.mark.timeout(120)
X = np.random.default_rng(5).normal(size=(1, 4)).astype(np.float32)


def _gpk(path, seed, key=None):
    artifact.write(path, {"name": "dense", "models": [{"format": "tflite", "file": "m.tflite"}]},
                   {"m.tflite": models.dense_tflite(seed)}, private_key=key)
    return path


def _ask(daemon):
    got = Collector()
    daemon.submit("t", X, {}, got.cb(0))
    assert got.wait(1)
    return got.results[0]


@pytest.fixture
def running(tmp_path):
    d, outbox = make_daemon(_gpk(tmp_path / "v1.gpk", seed=0))
    d.start()
    yield d, outbox, tmp_path
    d.stop()
    d.shutdown()


def test_reload_onto_a_broken_model_keeps_the_old_one_serving(running):
    daemon, _, tmp_path = running
    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    with pytest.raises(GanglionError):
        commands.reload(daemon, {"model": str(tmp_path / "broken.tflite")})
    r = _ask(daemon)
    assert r.ok
    np.testing.assert_allclose(r.outputs["y"], models.reference(X, seed=0), rtol=1e-5, atol=1e-5)
    reply = commands.reload(daemon, {"model": str(_gpk(tmp_path / "v2.gpk", seed=2))})
    assert reply["reloaded"]
    np.testing.assert_allclose(_ask(daemon).outputs["y"], models.reference(X, seed=2), rtol=1e-5, atol=1e-5)


def test_config_get_set(running):
    daemon, _, _ = running
    assert commands.config_get(daemon, {"key": "batch.max_batch"})["value"] == 8
    assert commands.config_set(daemon, {"key": "batch.budget_ms", "value": 7})["applied"] == "now"
    assert daemon.batcher.budget == pytest.approx(0.007)
    assert commands.config_set(daemon, {"key": "model.threads", "value": 2})["applied"] == "on reload"
    with pytest.raises(UsageError):
        commands.config_set(daemon, {"key": "sinks", "value": []})
    with pytest.raises(UsageError):
        commands.config_get(daemon, {"key": "nope.nothing"})


def test_deploy_refuses_unsigned_artifacts_when_keys_are_configured(running):
    daemon, outbox, tmp_path = running
    priv, pub = keys.generate(tmp_path / "k.pem")
    daemon.cfg = daemon.cfg.model_copy(update={"model": daemon.cfg.model.model_copy(
        update={"trusted_keys": (str(pub),)})})
    unsigned = _gpk(tmp_path / "u.gpk", seed=3)
    with pytest.raises(GanglionError) as info:
        commands.deploy(daemon, unsigned, {}, {})
    assert info.value.code == "artifact.signature_missing" and info.value.exit_code == 3
    signed = _gpk(tmp_path / "s.gpk", seed=3, key=keys.load_private(priv))
    reply = commands.deploy(daemon, signed, {}, {})
    assert reply["deployed"].endswith(".gpk") and reply["previous"].endswith("v1.gpk")
    np.testing.assert_allclose(_ask(daemon).outputs["y"], models.reference(X, seed=3), rtol=1e-5, atol=1e-5)
    assert [e["event"] for e in outbox.of("events")][-2:] == ["reload", "deploy"]


def test_reload_under_load_answers_every_request(running):
    import threading
    import time
    daemon, _, tmp_path = running
    got, n = Collector(), 300
    v2 = _gpk(tmp_path / "v2.gpk", seed=2)

    def load():
        for i in range(n):
            daemon.submit("t", X, {}, got.cb(i))
            time.sleep(0.002)
    feeder = threading.Thread(target=load)
    feeder.start()
    assert got.wait(50, timeout=20)
    commands.reload(daemon, {"model": str(v2)})
    feeder.join()
    assert got.wait(n, timeout=30) and got.duplicates == 0
    assert all(r.ok for r in got.results.values())              # a reload is not a failure
    # once reload returns, the new model answers (the feeder may have finished before it did: the
    # probe of the new model alone can outlast 300 submits on a loaded machine)
    np.testing.assert_allclose(_ask(daemon).outputs["y"], models.reference(X, seed=2), rtol=1e-5, atol=1e-5)
