"""The shadow command and deploy's shadow gate on a running daemon (real worker processes).

The candidate runs beside the current model on live inputs; the served answers stay the current
model's; the report compares the two; a deploy whose candidate disagrees is stored, not switched to.
"""
import threading

import numpy as np
import pytest

from core import artifact
from edge.daemon import commands, shadow
from core.errors import UsageError
from tests.edge import models
from tests.edge.daemon.helpers import Collector, make_daemon

pytestmark = pytest.mark.timeout(120)
XS = np.random.default_rng(7).normal(size=(6, 1, 4)).astype(np.float32)


def _gpk(path, seed):
    artifact.write(path, {"name": "dense", "version": str(seed), "models": [{"format": "tflite", "file": "m.tflite"}]},
                   {"m.tflite": models.dense_tflite(seed)})
    return path


@pytest.fixture
def running(tmp_path):
    d, _ = make_daemon(_gpk(tmp_path / "v0.gpk", seed=0))
    d.start()
    yield d, tmp_path
    d.stop()
    d.shutdown()


def _in_background(fn, *args):
    box = []
    thread = threading.Thread(target=lambda: box.append(_call(fn, *args)))
    thread.start()
    return thread, box


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:       # handed to the test thread, which asserts on it
        return exc


def _feed(daemon, n):
    got = Collector()
    for i in range(n):
        daemon.submit("t", XS[i], {}, got.cb(i))
    assert got.wait(n)
    return got


@pytest.mark.parametrize("seed, same", [(0, True), (3, False)])
def test_shadow_reports_agreement_while_serving_the_current_model(running, seed, same):
    daemon, tmp_path = running
    candidate = _gpk(tmp_path / f"cand{seed}.gpk", seed)
    thread, box = _in_background(shadow.shadow, daemon, {"model": str(candidate), "inputs": 4, "timeout_s": 30})
    got = Collector()
    for _ in range(200):        # live traffic until the shadow run has its inputs
        if not thread.is_alive():
            break
        daemon.submit("t", XS[0], {}, got.cb(len(got.results)))
        thread.join(0.05)
    thread.join(60)
    report = box[0]
    assert not isinstance(report, Exception), report
    assert report["inputs"] == 4 and report["failed"] == 0 and report["latency_ratio"] > 0
    if same:
        assert report["top1_agreement"] == 1.0 and report["sqnr_db"] == 99.0 and report["cosine"] == 1.0
    else:
        assert report["sqnr_db"] < 30 and report["cosine"] < 0.999
    for result in got.results.values():            # every served answer came from the current model
        np.testing.assert_allclose(result.outputs["y"], models.reference(XS[0], seed=0), rtol=1e-5, atol=1e-5)


def test_shadow_without_live_inputs_fails_in_time_and_restores_the_tap(running):
    daemon, tmp_path = running
    with pytest.raises(Exception) as info:
        shadow.shadow(daemon, {"model": str(tmp_path / "v0.gpk"), "inputs": 2, "timeout_s": 0.5})
    assert getattr(info.value, "code", None) == "shadow.no_inputs"
    assert "_request" not in vars(daemon)
    _feed(daemon, 2)


@pytest.mark.parametrize("args", [{}, {"model": "m", "inputs": 0}, {"model": "m", "inputs": 10_000},
                                  {"model": "m", "timeout_s": 1e6}])
def test_shadow_arguments_are_bounded(args):
    with pytest.raises(UsageError):
        shadow.check_args(args)


def test_deploy_below_the_agreement_gate_is_stored_not_switched(running):
    daemon, tmp_path = running
    candidate = _gpk(tmp_path / "cand.gpk", seed=3)
    thread, box = _in_background(commands.deploy, daemon, candidate, {}, {"shadow": 3, "min_agreement": 1.01})  # unreachable: the gate is under test
    while thread.is_alive():
        daemon.submit("t", XS[1], {}, None)
        thread.join(0.05)
    reply = box[0]
    assert not isinstance(reply, Exception), reply
    assert reply["switched"] is False and reply["shadow"]["inputs"] == 3
    got = _feed(daemon, 1)
    np.testing.assert_allclose(got.results[0].outputs["y"], models.reference(XS[0], seed=0), rtol=1e-5, atol=1e-5)
