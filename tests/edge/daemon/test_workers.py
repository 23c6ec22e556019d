"""Worker processes under fire: SIGKILL under load, poison requests, crash loops, bad input.

Real worker processes, real LiteRT (tests/edge/models.py); the misbehaving backends in crashy.py
really die by SIGSEGV. The invariant everywhere: every request gets exactly one answer.
"""
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.edge import models
from tests.edge.daemon.helpers import Collector, make_daemon, wait_for

pytestmark = pytest.mark.timeout(120)


def _x(i):
    return np.random.default_rng(i).normal(size=(1, models.IN)).astype(np.float32)


@pytest.mark.parametrize("workers,budget_ms", [(1, 1.0), (2, 1.0), (2, 0.0)])
def test_sigkill_under_load_restarts_within_2s_and_answers_everything(dense_tflite, workers, budget_ms):
    """budget 0: idle workers also get requests straight from the submitting thread."""
    daemon, outbox = make_daemon(dense_tflite, workers=workers, max_batch=4, budget_ms=budget_ms)
    daemon.start()
    got, n = Collector(), 400
    try:
        def load():
            for i in range(n):
                daemon.submit("test", _x(i), {"i": i}, got.cb(i))
                time.sleep(0.001)
        feeder = threading.Thread(target=load)
        feeder.start()
        assert got.wait(80, timeout=20)
        slot = daemon.pool.slots[0]
        old_pid = slot.pid
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        assert wait_for(lambda: slot.pid != old_pid and slot.ready_at, timeout=5)
        restart_s = slot.ready_at - killed_at
        feeder.join()
        assert got.wait(n, timeout=30)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert restart_s < 2.0, f"worker took {restart_s:.2f}s to come back"
    assert len(got.results) == n and got.duplicates == 0
    errors = [r for r in got.results.values() if not r.ok]
    assert all(r.error["code"] == "runtime.worker_crash" for r in errors)
    assert len(errors) <= 4                                      # at most the batch it held, after a retry
    for i, r in got.results.items():
        if r.ok:
            np.testing.assert_allclose(r.outputs["y"], models.reference(_x(i)), rtol=1e-5, atol=1e-5)
    kinds = [e["event"] for e in outbox.of("events")]
    assert "crash" in kinds and "restart" in kinds
    crash = next(e for e in outbox.of("events") if e["event"] == "crash")
    assert "SIGKILL" in crash["reason"]


@pytest.mark.parametrize("budget_ms", [200, 0])
def test_poison_request_is_retried_once_then_fails_alone(tmp_path, budget_ms):
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:on_poison",
                                 max_batch=16, budget_ms=budget_ms, max_restarts=5)
    daemon.start()
    got = Collector()
    try:
        for i in range(8):
            x = np.full((1, 4), -1000.0 if i == 3 else float(i), np.float32)
            daemon.submit("test", x, {}, got.cb(i))
        assert got.wait(8, timeout=30)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert not got.results[3].ok
    assert got.results[3].error["code"] == "runtime.worker_crash" and got.results[3].attempts == 2
    for i in set(range(8)) - {3}:
        assert got.results[i].ok, got.results[i].error
        assert got.results[i].outputs["y"].tolist() == [[2.0 * i] * 4]
    assert daemon.metrics.totals["restarts"] == 2                # first try (batch) + retry (alone)


def test_poison_request_does_not_use_up_the_retry_of_the_request_written_behind_it(tmp_path):
    """Batches of one: the dispatcher writes request i+1 while the worker runs request i. When i
    kills the worker, i+1 was never started; it must be sent again without counting an attempt,
    and the poison's retry must run alone."""
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:on_poison",
                                 max_batch=1, max_restarts=5)
    daemon.start()
    got = Collector()
    try:
        for i in range(12):
            x = np.full((1, 4), -1000.0 if i == 5 else float(i), np.float32)
            daemon.submit("test", x, {}, got.cb(i))
        assert got.wait(12, timeout=30)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.duplicates == 0
    assert got.results[5].error["code"] == "runtime.worker_crash" and got.results[5].attempts == 2
    for i in set(range(12)) - {5}:
        assert got.results[i].ok, (i, got.results[i].error)
        assert got.results[i].outputs["y"].tolist() == [[2.0 * i] * 4]
        assert got.results[i].attempts == 1, (i, got.results[i].attempts)
    assert daemon.metrics.totals["restarts"] == 2


def test_crash_on_every_request_escalates_and_stops_without_looping(tmp_path):
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:always",
                                 max_restarts=2, period=30, root_restarts=1, root_period=60)
    daemon.start()
    got = Collector()
    for i in range(6):
        daemon.submit("test", np.ones((1, 4), np.float32), {}, got.cb(i))
    assert daemon.stop_event.wait(60), "the root never gave up"
    code = daemon.shutdown()
    assert code != 0
    assert got.wait(6, timeout=5) and got.duplicates == 0
    assert all(not r.ok for r in got.results.values())
    assert {r.error["code"] for r in got.results.values()} <= {"runtime.worker_crash", "runtime.unavailable"}
    events = outbox.of("events")
    escalations = [e for e in events if e["event"] == "escalation"]
    assert [e["supervisor"] for e in escalations] == ["workers", "workers", "root"]
    assert "max restart intensity" in escalations[0]["reason"] and "SIGSEGV" in escalations[0]["reason"]
    restarts = [e for e in events if e["event"] == "restart"]
    # Bounded, no endless loop: 2 worker restarts per life of the workers' supervisor, which the
    # root restarts once (with the children after it, rest_for_one) before giving up itself.
    assert len([e for e in restarts if e["supervisor"] == "workers"]) <= 4
    root = [e["child"] for e in restarts if e["supervisor"] == "root"]
    assert root == ["workers", "metrics"]
    assert all(not s.pid or not _alive(s.pid) for s in daemon.pool.slots)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                 # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_unopenable_model_fails_start_with_the_workers_reason(tmp_path):
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:broken")
    with pytest.raises(Exception) as info:
        daemon.start()
    assert getattr(info.value, "code", "") == "runtime.model_load"
    assert "cannot be opened" in str(info.value)


@pytest.mark.parametrize("value, code", [
    (np.zeros((1, 5), np.float32), "input.shape"),
    (b"\x00\x01garbage", "input.raw_size"),
    (b'{"inputs": {"x": [[1, 2]]}}', "input.shape"),
    (b'{"inputs": [1, 2', "input.json"),
    (b'{"nothing": 1}', "input.json"),
    (b"\x93NUMPY\x01\x00garbage", "input.npy"),
    (np.array(["a", "b", "c", "d"]), "input.dtype"),
    (b"[" * 100_000 + b"]" * 100_000, "input.json"),                 # nested past the recursion limit
    (b'{"inputs": {"x": [[1, 2], [3]]}}', "input.json"),              # ragged
])
def test_bad_inputs_are_answered_with_errors_and_the_daemon_stays_up(dense_tflite, value, code):
    daemon, _ = make_daemon(dense_tflite)
    daemon.start()
    got = Collector()
    try:
        pid = daemon.pool.slots[0].pid
        daemon.submit("test", value, {}, got.cb("bad"))
        daemon.submit("test", _x(1), {}, got.cb("good"))
        assert got.wait(2, timeout=20)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.results["bad"].error["code"] == code
    assert got.results["good"].ok
    assert daemon.pool.slots[0].pid == pid                       # no crash, no restart


def test_pickled_npy_is_refused(dense_tflite, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    daemon, _ = make_daemon(dense_tflite)
    daemon.start()
    got = Collector()
    try:
        daemon.submit("test", (tmp_path / "obj.npy").read_bytes(), {}, got.cb(0))
        assert got.wait(1)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.results[0].error["code"] == "input.npy"


def test_micro_batches_form_and_answers_stay_in_place(dense_tflite):
    daemon, _ = make_daemon(dense_tflite, max_batch=8, budget_ms=30)
    daemon.start()
    got = Collector()
    try:
        for i in range(64):
            daemon.submit("test", _x(i), {}, got.cb(i))
        assert got.wait(64)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert daemon.batcher.batched_requests == 64
    assert daemon.batcher.batches <= 32                           # batching happened
    for i, r in got.results.items():
        np.testing.assert_allclose(r.outputs["y"], models.reference(_x(i)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixture, tol", [("dense_int8", 0.1), ("dense_onnx", 1e-5)])
def test_int8_and_onnxruntime_models_serve_float_results(request, fixture, tol):
    daemon, _ = make_daemon(request.getfixturevalue(fixture))
    daemon.start()
    got = Collector()
    x = np.clip(np.random.default_rng(0).normal(size=(3, 4)), -3.9, 3.9).astype(np.float32)
    try:
        daemon.submit("test", x, {}, got.cb("three"))            # one request holding 3 samples
        assert got.wait(1)
    finally:
        daemon.stop()
        daemon.shutdown()
    r = got.results["three"]
    assert r.ok and r.outputs["y"].dtype == np.float32 and r.outputs["y"].shape == (3, 3)
    np.testing.assert_allclose(r.outputs["y"], models.reference(x), atol=tol, rtol=tol)


def test_backpressure_blocks_file_sources_and_drops_nothing(tmp_path):
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                            factory_args={"delay_s": 0.02}, queue=2, max_batch=1)
    daemon.start()
    got, depths = Collector(), []
    try:
        for i in range(30):
            daemon.submit("test", np.full((1, 4), i, np.float32), {}, got.cb(i))
            depths.append(len(daemon.requests))
        assert got.wait(30)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert max(depths) <= 2
    assert sorted(got.results) == list(range(30)) and all(r.ok for r in got.results.values())
    assert daemon.metrics.totals["dropped"] == 0


def _segments():
    return {p.name for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").is_dir() else set()


# max_batch 1: every request is its own job, so two are in flight at once and the worker's two
# shared-memory segments are used in turn -- a mix-up would answer a request with its neighbour's sum
@pytest.mark.parametrize("max_batch,budget_ms", [(4, 20), (1, 0)])
def test_large_inputs_travel_through_shared_memory_and_survive_a_crash(tmp_path, max_batch, budget_ms):
    from tests.edge.daemon.crashy import BIG
    before = _segments()
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:big",
                            max_batch=max_batch, budget_ms=budget_ms, max_restarts=5)
    daemon.start()
    got = Collector()
    xs = [np.random.default_rng(i).normal(size=(1, BIG)).astype(np.float32) for i in range(12)]
    try:
        for i, x in enumerate(xs):
            daemon.submit("test", x, {}, got.cb(i))
        assert got.wait(12)
        during = _segments() - before
        poison = np.full((1, BIG), -1.0, np.float32)
        daemon.submit("test", poison, {}, got.cb("poison"))
        daemon.submit("test", xs[0], {}, got.cb("after"))
        assert got.wait(14)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert during, "expected a shared-memory segment for 400 KB inputs"
    for i, x in enumerate(xs):
        assert got.results[i].ok
        np.testing.assert_allclose(got.results[i].outputs["y"][0], x.sum(), rtol=1e-4)
    assert got.results["poison"].error["code"] == "runtime.worker_crash"
    np.testing.assert_allclose(got.results["after"].outputs["y"][0], xs[0].sum(), rtol=1e-4)
    assert wait_for(lambda: not (_segments() - before), timeout=5), "shared memory leaked"


def test_a_hung_worker_is_killed_after_the_request_timeout(tmp_path):
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:hangs_on_poison",
                                 request_timeout=0.5, max_restarts=5, max_batch=1)
    daemon.start()
    got = Collector()
    try:
        daemon.submit("test", np.full((1, 4), -1000.0, np.float32), {}, got.cb("hang"))
        daemon.submit("test", np.ones((1, 4), np.float32), {}, got.cb("fine"))
        assert got.wait(2, timeout=30)
    finally:
        daemon.stop()
        daemon.shutdown()
    assert got.results["hang"].error["code"] == "runtime.worker_crash"
    assert "SIGKILL" in got.results["hang"].error["message"]
    assert got.results["fine"].ok
    assert [e["event"] for e in outbox.of("events")].count("worker_hang") == 2


@pytest.mark.parametrize("allow", [True, False])
def test_missing_delegate_in_a_worker_is_an_event_or_a_clear_failure(dense_tflite, allow):
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    cfg = from_dict({"model": {"path": str(dense_tflite), "delegate": "libganglion_missing_tpu.so.1",
                               "allow_cpu_fallback": allow}, "workers": {"max_restarts": 1}}).require_model()
    outbox = MemoryOutbox()
    daemon = Daemon(cfg, outbox=outbox)
    if not allow:
        with pytest.raises(Exception) as info:
            daemon.start()
        assert info.value.code == "runtime.delegate_missing" and "allow_cpu_fallback" in info.value.hint
        return
    daemon.start()
    try:
        got = Collector()
        daemon.submit("t", _x(0), {}, got.cb(0))
        assert got.wait(1) and got.results[0].ok
    finally:
        daemon.stop()
        daemon.shutdown()
    fallback = [e for e in outbox.of("events") if e["event"] == "delegate_fallback"]
    assert fallback and fallback[0]["delegate"] == "libganglion_missing_tpu.so.1"
