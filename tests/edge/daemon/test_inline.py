"""The opt-in in-process worker (``[workers] isolation = "thread"``): same answers, same rules for
bad input and backend errors, no worker process. Native crashes are not tested here: in this mode
they take the daemon (here: pytest) down, which is the documented trade-off."""
import numpy as np
import pytest

from core.errors import UsageError
from edge.daemon.config import from_dict
from tests.edge import models
from tests.edge.daemon.helpers import Collector, make_daemon

pytestmark = pytest.mark.timeout(60)


def test_thread_isolation_serves_a_real_model_in_batches(dense_tflite):
    daemon, _ = make_daemon(dense_tflite, isolation="thread", max_batch=8, budget_ms=30)
    daemon.start()
    got = Collector()
    xs = [np.random.default_rng(i).normal(size=(1, models.IN)).astype(np.float32) for i in range(40)]
    try:
        for i, x in enumerate(xs):
            daemon.submit("test", x, {}, got.cb(i))
        assert got.wait(40)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.duplicates == 0
    for i, x in enumerate(xs):
        r = got.results[i]
        assert r.ok and r.worker == "worker-0"
        np.testing.assert_allclose(r.outputs["y"], models.reference(x), rtol=1e-5, atol=1e-5)
    assert daemon.pool.pids() == []                     # no worker process was started
    assert daemon.batcher.batched_requests > daemon.batcher.batches       # batches did form
    assert "in the daemon's process" in "\n".join(daemon.root.describe())


def test_thread_isolation_answers_bad_input_and_backend_bugs_and_keeps_serving(tmp_path):
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:raises_on_poison",
                            isolation="thread", max_batch=1)
    daemon.start()
    got = Collector()
    try:
        daemon.submit("test", np.zeros((1, 5), np.float32), {}, got.cb("shape"))
        daemon.submit("test", np.full((1, 4), -1000.0, np.float32), {}, got.cb("bug"))
        daemon.submit("test", np.full((1, 4), 3.0, np.float32), {}, got.cb("good"))
        assert got.wait(3)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.results["shape"].error["code"] == "input.shape"
    assert got.results["bug"].error["code"] == "runtime.inference"
    assert "ZeroDivisionError" in got.results["bug"].error["message"]
    assert got.results["good"].outputs["y"].tolist() == [[6.0] * 4]
    assert daemon.metrics.totals["restarts"] == 0


def test_thread_isolation_unopenable_model_fails_start_with_its_reason(tmp_path):
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:broken",
                                 isolation="thread")
    with pytest.raises(Exception) as info:
        daemon.start()
    assert getattr(info.value, "code", "") == "runtime.model_load"
    assert any(e.get("event") == "worker_fatal" for e in outbox.of("events"))


def test_isolation_is_checked():
    with pytest.raises(UsageError) as info:
        from_dict({"model": {"path": "m.tflite"}, "workers": {"isolation": "none"}}).require_model()
    assert info.value.where == "workers.isolation"


def test_infer_on_an_idle_thread_worker_runs_the_backend_on_the_calling_thread(tmp_path):
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:raises_on_poison",
                            isolation="thread")
    daemon.start()
    try:
        for i in range(5):
            r = daemon.infer(np.full((1, 4), float(i), np.float32))
            assert r.ok and r.outputs["y"].tolist() == [[2.0 * i] * 4]
        bug = daemon.infer(np.full((1, 4), -1000.0, np.float32))      # a backend exception
        assert not bug.ok and "ZeroDivisionError" in bug.error["message"]
        assert daemon.infer(np.ones((1, 4), np.float32)).ok
        got = Collector()
        daemon.submit("test", np.ones((1, 4), np.float32), {}, got.cb(0))    # async: through the queue
        assert got.wait(1)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert daemon.metrics.totals["direct_runs"] == 7
