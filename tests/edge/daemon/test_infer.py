"""``Daemon.infer``: the synchronous door, where the calling thread talks to an idle worker itself.

Real worker processes throughout (real LiteRT for the numbers, the crashy backends for real
SIGSEGVs). The invariants are the queued path's: every input gets exactly one answer, a crash
costs one retry, nothing is lost -- whichever thread happened to hold the worker's pipe.
"""
import os
import signal
import threading
import time

import numpy as np
import pytest

from core.errors import RuntimeBackendError
from tests.edge import models
from tests.edge.daemon import crashy
from tests.edge.daemon.helpers import Collector, make_daemon, wait_for

pytestmark = pytest.mark.timeout(120)


def _x(i):
    return np.random.default_rng(i).normal(size=(1, models.IN)).astype(np.float32)


@pytest.fixture
def running():
    started = []

    def start(*args, **kwargs):
        daemon, outbox = make_daemon(*args, **kwargs)
        started.append(daemon.start())
        return daemon, outbox
    yield start
    for daemon in started:
        daemon.stop()
        daemon.shutdown()


def test_infer_answers_on_the_calling_thread_when_a_worker_is_idle(dense_tflite, running):
    daemon, _ = running(dense_tflite)
    for i in range(20):
        result = daemon.infer(_x(i))
        assert result.ok, result.error
        np.testing.assert_allclose(result.outputs["y"], models.reference(_x(i)), rtol=1e-5, atol=1e-5)
    assert daemon.metrics.totals["direct_runs"] == 20
    assert daemon.router.answered == 20


def test_submit_goes_through_the_queue_and_the_dispatcher_answers(dense_tflite, running):
    daemon, _ = running(dense_tflite)
    got, threads = Collector(), {}

    def cb(i):
        inner = got.cb(i)

        def on_done(result):
            threads[i] = threading.get_ident()
            inner(result)
        return on_done
    for i in range(10):
        daemon.submit("t", _x(i), {}, cb(i))
        assert got.wait(i + 1, timeout=10)          # one at a time: the worker is idle each time
    assert daemon.metrics.totals.get("direct_runs", 0) == 0 and got.duplicates == 0
    assert threading.get_ident() not in threads.values()     # the answer came through the dispatcher
    for i, result in got.results.items():
        np.testing.assert_allclose(result.outputs["y"], models.reference(_x(i)), rtol=1e-5, atol=1e-5)


def test_infer_with_a_batching_budget_goes_through_the_queue(dense_tflite, running):
    daemon, _ = running(dense_tflite, budget_ms=2.0)
    result = daemon.infer(_x(1))
    assert result.ok and daemon.metrics.totals.get("direct_runs", 0) == 0
    np.testing.assert_allclose(result.outputs["y"], models.reference(_x(1)), rtol=1e-5, atol=1e-5)


def test_bad_input_is_an_error_result_not_an_exception(dense_tflite, running):
    daemon, _ = running(dense_tflite)
    result = daemon.infer(np.zeros((1, models.IN + 3), np.float32))
    assert not result.ok and result.error["code"] == "input.shape"
    assert daemon.infer(_x(2)).ok                       # and the daemon carries on


def test_large_inputs_travel_through_shared_memory(tmp_path, running):
    daemon, _ = running(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:big")
    for i in range(6):
        x = np.random.default_rng(i).normal(size=(1, crashy.BIG)).astype(np.float32)
        result = daemon.infer(x)
        assert result.ok, result.error
        np.testing.assert_allclose(result.outputs["y"][0, 0], x.sum(), rtol=1e-4)


def test_a_poison_input_kills_the_worker_under_the_caller_then_is_retried_once(tmp_path, running):
    daemon, outbox = running(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:on_poison",
                             max_restarts=5)
    poison = daemon.infer(np.full((1, 4), -1000.0, np.float32), timeout=30)
    assert not poison.ok and poison.error["code"] == "runtime.worker_crash" and poison.attempts == 2
    after = daemon.infer(np.full((1, 4), 3.0, np.float32), timeout=30)
    assert after.ok and after.outputs["y"].tolist() == [[6.0] * 4]
    assert [e["event"] for e in outbox.of("events")].count("crash") == 2


def test_a_worker_killed_while_idle_costs_the_next_caller_one_retry_not_its_answer(dense_tflite, running):
    daemon, _ = running(dense_tflite)
    assert daemon.infer(_x(0)).ok
    slot = daemon.pool.slots[0]
    old = slot.pid
    os.kill(old, signal.SIGKILL)
    result = daemon.infer(_x(5), timeout=30)            # may meet the dead pipe before the supervisor does
    assert result.ok, result.error
    np.testing.assert_allclose(result.outputs["y"], models.reference(_x(5)), rtol=1e-5, atol=1e-5)
    assert wait_for(lambda: slot.pid != old and slot.ready_at, timeout=10)


def test_callers_and_queued_sources_share_the_workers_and_all_get_one_answer(dense_tflite, running):
    daemon, _ = running(dense_tflite, workers=2, max_batch=4)
    queued, direct, errors = Collector(), {}, []
    lock = threading.Lock()

    def caller(t):
        for i in range(60):
            key = t * 1000 + i
            result = daemon.infer(_x(key), timeout=30)
            with lock:
                direct[key] = result

    def source():
        for i in range(200):
            daemon.submit("feeder", _x(10_000 + i), {}, queued.cb(10_000 + i))
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(3)] + [threading.Thread(target=source)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert queued.wait(200, timeout=30) and queued.duplicates == 0
    assert len(direct) == 180
    for key, result in [*direct.items(), *queued.results.items()]:
        if not result.ok:
            errors.append((key, result.error))
            continue
        np.testing.assert_allclose(result.outputs["y"], models.reference(_x(key)), rtol=1e-5, atol=1e-5)
    assert not errors
    assert daemon.router.answered == 380


def test_infer_timeout_is_a_typed_error_and_the_answer_still_reaches_the_sinks(tmp_path, running):
    daemon, _ = running(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                        factory_args={"delay_s": 0.5}, budget_ms=1.0)
    with pytest.raises(RuntimeBackendError) as info:
        daemon.infer(np.ones((1, 4), np.float32), timeout=0.05)
    assert info.value.code == "runtime.timeout"
    assert wait_for(lambda: daemon.router.answered == 1, timeout=10)


def test_infer_that_cannot_even_be_queued_in_time_is_refused_as_busy(tmp_path, running):
    daemon, _ = running(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                        factory_args={"delay_s": 1.0}, queue=1)
    got = Collector()
    daemon.submit("t", np.ones((1, 4), np.float32), {}, got.cb("running"))     # the worker is busy,
    assert wait_for(lambda: len(daemon.pool.slots[0].handle.inflight) == 1, timeout=5)
    daemon.submit("t", np.ones((1, 4), np.float32), {}, got.cb("queued"))      # the queue is full
    assert len(daemon.requests) == 1
    t0 = time.monotonic()
    result = daemon.infer(np.ones((1, 4), np.float32), timeout=0.3)
    assert time.monotonic() - t0 < 0.9                                         # not held until room came
    assert not result.ok and result.error["code"] == "runtime.busy"
    assert got.wait(2, timeout=10) and all(r.ok for r in got.results.values())
    assert daemon.infer(np.ones((1, 4), np.float32), timeout=10).ok           # and it serves again
