"""The request path's races, forced: windows the stress run (test_request_path_stress.py) can
only hit by luck, opened on purpose. Each test freezes a thread where a scheduler only now and
then would, then lets the real code run on real worker processes; each failed before the fix it
names (docs/request-path.md, the findings table).
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edge.daemon.messages import Job, Request
from core.errors import GanglionError
from tests.edge.daemon import crashy
from tests.edge.daemon.helpers import Collector, make_daemon, wait_for
from tests.edge.daemon.test_request_path_stress import Dense, kill_worker

pytestmark = pytest.mark.timeout(120)


# Each test below freezes the dispatcher where it waits for work by holding the request queue's
# lock (it cannot return from ``Fifo.get`` without it), opening on purpose the window a scheduler
# opens only now and then; what happens next runs on the real code, real worker processes.

def _parked(daemon) -> bool:
    return wait_for(lambda: daemon.pool.idle == len(daemon.pool.slots), timeout=10)


def test_a_job_handed_to_the_dispatcher_as_the_worker_stops_is_still_answered(dense_tflite, tmp_path):
    """An ``infer`` whose timeout passes leaves its job in flight to the dispatcher; the stop
    begins before the dispatcher looks again. The worker answered (the run came before the stop on
    the pipe): that answer must reach the sinks. It was lost when the dispatcher, back at the top
    of its loop, saw ``stopping`` and quit with the job still in flight (found with ``submit``
    writing to an idle worker, a path that no longer exists; the hand-over is the same).

    The window: an idle dispatcher whose wait timed out checks that its worker is alive (a
    waitpid, during which other threads run) and loops. The check is wrapped here to let the
    ``infer`` and the start of a stop happen inside it, as another thread may."""
    out = tmp_path / "results.jsonl"
    daemon, _ = make_daemon(dense_tflite, sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    handle = daemon.pool.slots[0].handle
    stopper = threading.Thread(target=lambda: (daemon.stop(), daemon.shutdown()), daemon=True)
    is_alive = handle.process.is_alive

    def infer_past_its_timeout():
        try:
            daemon.infer(Dense.value(7), {"key": 7}, timeout=0.0)
        except GanglionError as exc:
            assert exc.code == "runtime.timeout"

    def infer_and_stop_meanwhile():
        alive = is_alive()
        if threading.current_thread().name.startswith("dispatch-") and not stopper.is_alive():
            caller = threading.Thread(target=infer_past_its_timeout)
            caller.start()
            caller.join(10)
            stopper.start()
            wait_for(handle.stopping.is_set, timeout=10)
        return alive
    handle.process.is_alive = infer_and_stop_meanwhile
    stopper_started = wait_for(stopper.is_alive, timeout=10)
    stopper.join(30)
    assert stopper_started and not stopper.is_alive(), "shutdown never began, or hung"
    assert daemon.metrics.totals["direct_runs"] == 1      # written from the calling thread
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["ok"], result
    Dense.check(7, {"y": np.asarray([result["outputs"]["y"]], np.float32)})


def test_a_request_written_to_an_already_dead_worker_keeps_its_retry(dense_tflite):
    """A submitter can find a worker's handle after the worker died and before the supervisor
    replaced it; the write fails (EPIPE), so the worker never had the request. It goes back to the
    queue without using up its retry: one more crash must not be enough to fail it."""
    daemon, outbox = make_daemon(dense_tflite, max_restarts=5)
    daemon.start()
    got = Collector()
    try:
        old = daemon.pool.slots[0].handle
        assert _parked(daemon)
        with daemon.requests._cond:       # the old dispatcher cannot notice the death and retire
            assert kill_worker(old.pid)
            assert old.exited.wait(10)
            req = Request("t", {"x": Dense.value(3)}, {"key": 3}, got.cb(3))
            assert old.lend(Job([req]))                      # what ``Daemon.infer`` would call
        assert got.wait(1, timeout=30)
    finally:
        daemon.stop()
        daemon.shutdown()
    result = got.results[3]
    assert result.ok, result.error
    Dense.check(3, result.outputs)
    assert result.attempts == 1, f"a request the dead worker never read was charged {result.attempts} attempts"


def test_infer_returns_with_its_own_answer_instead_of_serving_the_queue(tmp_path):
    """``infer`` runs its round trip itself and may write a queued job ahead while the worker
    computes. If it then kept reading answers until nothing was in flight, a busy queue would keep
    it serving other inputs (and past its own timeout) for as long as the traffic lasts. Forced
    here: the first write-ahead happens just as other submitters have filled the queue."""
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                            factory_args={"delay_s": 0.01}, max_batch=1, queue=16)
    daemon.start()
    routed_on, fed = {}, threading.Event()
    done = Collector()
    n = 60

    def feed():
        for i in range(n):
            def on_done(result, i=i):
                routed_on[i] = threading.current_thread().name
                done.cb(i)(result)
            daemon.submit("feeder", np.full((1, 4), float(i), np.float32), {}, on_done)
        fed.set()
    outbound = daemon.pool.slots[0].handle.outbound
    place = outbound.place

    def queue_fills_meanwhile(*args):
        # the interleaving: while the caller's request is on its way to the worker, others queue
        # up behind it and the dispatcher takes one of them (so it is no longer idle, and the
        # caller may write a queued job ahead)
        if threading.current_thread().name == "caller" and not feeder.is_alive() and not fed.is_set():
            feeder.start()
            wait_for(lambda: len(daemon.requests) >= 2 and daemon.pool.idle == 0, timeout=10)
        return place(*args)
    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    outbound.place = queue_fills_meanwhile
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(r=daemon.infer(np.full((1, 4), -1.0, np.float32),
                                                                          timeout=30)), name="caller")
    try:
        assert _parked(daemon)
        caller.start()
        caller.join(30)
        assert not caller.is_alive()
        feeder_answers_then = len(done.results)
        assert done.wait(n, timeout=30) and done.duplicates == 0
    finally:
        daemon.stop()
        daemon.shutdown()
    assert answer["r"].ok and answer["r"].outputs["y"].tolist() == [[-2.0] * 4]
    on_caller = sorted(i for i, name in routed_on.items() if name == "caller")
    assert not on_caller, f"infer's thread routed {len(on_caller)} other inputs' answers"
    assert feeder_answers_then < n, "infer returned only after the whole queue had been served"
    assert all(done.results[i].outputs["y"].tolist() == [[2.0 * i] * 4] for i in range(n))


@pytest.mark.parametrize("budget_ms", [0.0, 1.0])
def test_a_raising_on_done_does_not_take_the_workers_dispatcher_down(dense_tflite, budget_ms):
    """``on_done`` runs on the dispatcher thread. A caller's callback that raises used to end
    that thread while the worker process lived on: nothing was served any more, and the
    supervisor (watching the process) never noticed."""
    daemon, _ = make_daemon(dense_tflite, budget_ms=budget_ms)
    daemon.start()
    got, raised = Collector(), threading.Event()

    def buggy(result):
        raised.set()
        raise RuntimeError("a bug in the caller's callback")
    try:
        daemon.submit("t", Dense.value(1), {"key": 1}, buggy)
        assert raised.wait(10)
        for key in range(2, 12):
            daemon.submit("t", Dense.value(key), {"key": key}, got.cb(key))
        assert got.wait(10, timeout=10), f"only {len(got.results)} of 10 answered after the callback raised"
    finally:
        daemon.stop()
        daemon.shutdown()
    for key, result in got.results.items():
        assert result.ok, result.error
        Dense.check(key, result.outputs)
    assert daemon.metrics.totals["callback_errors"] == 1


def test_infer_timeout_holds_on_the_direct_path_and_the_dispatcher_takes_the_answer(tmp_path):
    """The calling thread reads the worker's answer itself; past its timeout it must give up
    (``runtime.timeout``, as on the queued path) and leave the answer to the dispatcher -- it used
    to block for as long as the model took. The worker is not lost for the next caller."""
    from core.errors import RuntimeBackendError
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                            factory_args={"delay_s": 1.0})
    daemon.start()
    try:
        with pytest.raises(RuntimeBackendError) as info:
            daemon.infer(np.ones((1, 4), np.float32), timeout=0.1)
        assert info.value.code == "runtime.timeout"
        assert daemon.router.answered == 0                      # it gave up before the answer existed
        assert daemon.metrics.totals["direct_runs"] == 1        # and it did take the direct path
        assert wait_for(lambda: daemon.router.answered == 1, timeout=10)   # the answer reached the sinks
        again = daemon.infer(np.full((1, 4), 2.0, np.float32), timeout=10)
        assert again.ok and again.outputs["y"].tolist() == [[4.0] * 4]
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_job_requeued_after_the_shutdown_closed_the_retry_queue_is_answered_not_dropped(tmp_path):
    """Logic only (no worker): shutdown closes the retry queue, then answers what is in it. A
    worker thread that finishes late (a dispatcher past its join timeout, a direct caller) and
    puts a job back after that used to leave it where nobody looks; now it is answered at once.
    Before the close, a requeued job waits in the queue and the parked dispatchers are woken."""
    from edge.daemon.pool import WorkerPool
    from edge.daemon.worker import WorkerSpec
    answers, nudges = [], []
    pool = WorkerPool(WorkerSpec(model=str(tmp_path / "unused.tflite")), 0, deliver=answers.append,
                      on_event=lambda event: None)
    pool.nudge = lambda: nudges.append(1)
    early = Job([Request("t", {"x": Dense.value(1)}, {"key": 1})])
    pool.requeue(early)
    assert len(pool.jobs) == 1 and nudges == [1] and not answers
    pool.jobs.close()
    assert pool.fail_pending("the daemon is stopping") == 1
    late = Job([Request("t", {"x": Dense.value(2)}, {"key": 2})])
    pool.requeue(late)
    assert len(pool.jobs) == 0
    assert [(a.request.meta["key"], a.error["code"]) for a in answers] == [(1, "runtime.unavailable"),
                                                                          (2, "runtime.unavailable")]


def test_a_hung_worker_under_a_direct_caller_is_killed_at_the_request_timeout_not_the_callers(tmp_path):
    """The caller's own wait (its ``infer`` timeout) must not postpone hang detection: with a
    request timeout of 1 s, a hung kernel is killed after 1 s (twice: the retry hangs too), and the
    caller gets ``runtime.worker_crash`` well within its own 15 s."""
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:hangs_on_poison",
                                 request_timeout=1.0, max_restarts=5)
    daemon.start()
    try:
        result = daemon.infer(np.full((1, 4), -1000.0, np.float32), timeout=15)
        assert daemon.metrics.totals["direct_runs"] == 1
    finally:
        daemon.stop()
        daemon.shutdown()
    assert not result.ok and result.error["code"] == "runtime.worker_crash" and result.attempts == 2
    assert [e["event"] for e in outbox.of("events")].count("worker_hang") == 2
