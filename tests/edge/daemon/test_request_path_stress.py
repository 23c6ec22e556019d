"""Stress test of the daemon's request path: who owns a worker's pipe, under fire.

Several threads call ``Daemon.infer`` (the calling thread may run the round trip itself) and
``Daemon.submit`` (an idle worker may be written to from the submitting thread, its answer read by
the dispatcher) at the same time, with small inputs (inline in the pipe frame: the dense LiteRT
model) or large ones (shared memory: ``crashy.big``), on one or two real worker processes. Workers
are SIGKILLed at random moments, then the daemon is stopped while the traffic still flows.

Invariants (the issue's "every request answered, none lost"):
- every input gets exactly one answer (a result or an error): none missing, no duplicates -- the
  router's count of answers equals the number of inputs, and each ``on_done`` fires once;
- every ok result is numerically right for ITS input (the input's identity is in its values);
- errors are only the ones the crash and stop rules allow (``runtime.worker_crash`` while workers
  are killed; ``runtime.unavailable`` / ``runtime.stopping`` once the daemon stops);
- nothing hangs (every wait has a timeout), and every kill shows up as a crash event.

Randomness (kill times, victims, pauses between requests) is seeded; the seed is printed in every
failure message. Re-run one with ``GANGLION_STRESS_SEED=<seed>``.
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from edge.daemon.messages import Job, Request
from tests.edge import models
from tests.edge.daemon import crashy
from tests.edge.daemon.helpers import Collector, make_daemon, wait_for

pytestmark = pytest.mark.timeout(120)

STOP_CODES = {"runtime.unavailable", "runtime.stopping"}
KILL_PHASE_S = 2.5                  # random SIGKILLs during this long
TAIL_S = 0.3                        # traffic keeps flowing this long after shutdown returned


def _seed() -> int:
    return int(os.environ.get("GANGLION_STRESS_SEED") or random.SystemRandom().randrange(2 ** 31))


# -- inputs whose values say who they are ---------------------------------------------------------
class Dense:
    """Small inputs (16 bytes: inline in the pipe frame), real LiteRT."""
    factory = None

    @staticmethod
    def poison(key: int) -> bool:
        return False

    @staticmethod
    def value(key: int) -> np.ndarray:
        return np.random.default_rng(key).normal(size=(1, models.IN)).astype(np.float32)

    @staticmethod
    def check(key: int, outputs: dict) -> None:
        np.testing.assert_allclose(outputs["y"], models.reference(Dense.value(key)), rtol=1e-5, atol=1e-5)


class Big:
    """Large inputs (400 KB: shared memory); y = sum(x), and x is the key + 1 everywhere, so a
    segment holding part of another request's data gives a visibly wrong sum. A few inputs are
    poison (first value -1: the worker dies by SIGSEGV on them), mixed into the same traffic: they
    must fail alone, after two crashes, without costing a batch-mate or a neighbour its answer."""
    factory = "tests.edge.daemon.crashy:big"

    @staticmethod
    def poison(key: int) -> bool:
        return key % 509 == 254

    @staticmethod
    def value(key: int) -> np.ndarray:
        x = np.full((1, crashy.BIG), key + 1, np.float32)
        if Big.poison(key):
            x[0, 0] = -1
        return x

    @staticmethod
    def check(key: int, outputs: dict) -> None:
        np.testing.assert_allclose(outputs["y"], np.full((1, 4), (key + 1) * crashy.BIG), rtol=1e-5)


# -- killing our own workers, and only them ------------------------------------------------------
def kill_worker(pid: int | None) -> bool:
    """SIGKILL a live worker process of this test; False if it is gone already.

    Through a pidfd, checked to be our child and not a zombie: a pid read from a slot a moment
    ago may belong to a process that died and was reaped since, and the number may be reused by
    a stranger by now -- a pidfd names one process, and signalling it fails once it is dead."""
    if not pid:
        return False
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z" or int(fields[1]) != os.getpid():
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except (ProcessLookupError, FileNotFoundError):
        return False
    finally:
        os.close(fd)


# -- the traffic ------------------------------------------------------------------------------
class Traffic:
    """Threads calling ``infer`` and ``submit`` until told to stop; every input and answer kept."""

    def __init__(self, daemon, kind, seed: int, infer_threads: int = 3, submit_threads: int = 2):
        self.daemon, self.kind, self.seed = daemon, kind, seed
        self.keys = itertools.count()
        self.lock = threading.Lock()
        self.sent: set[int] = set()             # every input handed to the daemon
        self.answers: dict[int, tuple] = {}     # key -> (Result, was the stop under way when it came)
        self.duplicates: list[int] = []
        self.stopping = threading.Event()       # set just before ``Daemon.stop``
        self.hung: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._infer, args=(i,), name=f"infer-{i}", daemon=True)
                        for i in range(infer_threads)]
        self.threads += [threading.Thread(target=self._submit, args=(i,), name=f"submit-{i}", daemon=True)
                         for i in range(submit_threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> list[str]:
        self.stop.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    def _key(self) -> int:
        key = next(self.keys)
        with self.lock:
            self.sent.add(key)
        return key

    def _pause(self, rng: random.Random) -> None:
        # mostly back to back (the worker is often busy: queued path), sometimes a gap (idle worker:
        # the direct paths)
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0, 0.003))

    def _infer(self, n: int) -> None:
        rng = random.Random(self.seed * 31 + n)
        while not self.stop.is_set():
            key = self._key()
            try:
                result = self.daemon.infer(self.kind.value(key), {"key": key}, timeout=20)
            except Exception as exc:        # runtime.timeout: the invariant "never hangs" is broken
                with self.lock:
                    self.hung.append(f"infer {key}: {exc}")
                return
            self._answered(key, result)
            self._pause(rng)

    def _submit(self, n: int) -> None:
        rng = random.Random(self.seed * 37 + n)
        while not self.stop.is_set():
            key = self._key()
            self.daemon.submit("stress", self.kind.value(key), {"key": key},
                               lambda result, key=key: self._answered(key, result))
            self._pause(rng)

    def _answered(self, key: int, result) -> None:
        late = self.stopping.is_set()
        with self.lock:
            if key in self.answers:
                self.duplicates.append(key)
            self.answers[key] = (result, late)


def _kill_randomly(daemon, rng: random.Random, seconds: float) -> int:
    kills, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.15, 0.5))
        slot = rng.choice(daemon.pool.slots)
        kills += kill_worker(slot.pid)
    return kills


def _crashes(outbox) -> list[dict]:
    return [e for e in outbox.of("events") if e["event"] == "crash" and e.get("supervisor") == "workers"]


def _check_answers(traffic: Traffic, daemon, kills: int, why: str) -> None:
    answers = traffic.answers
    missing = traffic.sent - answers.keys()
    assert not missing, f"{why}: {len(missing)} inputs never answered, e.g. {sorted(missing)[:5]}"
    assert not traffic.duplicates, f"{why}: inputs answered twice: {traffic.duplicates[:5]}"
    # infer's answers are counted here too: a second answer to an infer would show up only here
    assert daemon.router.answered == len(traffic.sent), \
        f"{why}: {daemon.router.answered} answers routed for {len(traffic.sent)} inputs"
    crash_errors = 0
    for key, (result, late) in answers.items():
        assert result.request.meta.get("key") == key, f"{why}: input {key} got the answer of another input"
        if traffic.kind.poison(key):
            assert not result.ok, f"{why}: poison input {key} got a result"
            assert (result.error["code"] == "runtime.worker_crash" and result.attempts == 2) or \
                (result.error["code"] in STOP_CODES and late), f"{why}: poison input {key}: {result.error}"
            continue
        if result.ok:
            try:
                traffic.kind.check(key, result.outputs)
            except AssertionError as exc:
                raise AssertionError(f"{why}: wrong numbers for input {key}: {exc}") from None
            continue
        code = result.error["code"]
        if code == "runtime.worker_crash":
            crash_errors += 1
            continue
        # before the stop began, only a crash may fail an input
        assert code in STOP_CODES and late, f"{why}: input {key} failed with {result.error} (late={late})"
    # a (harmless) request fails only after crashing a worker twice, the second time alone --
    # which only a kill can do: one kill each
    assert crash_errors <= kills, f"{why}: {crash_errors} crash errors from {kills} kills"


class Case:
    def __init__(self, kind, workers: int, budget_ms: float = 0.0, isolation: str = "process"):
        self.kind, self.workers, self.budget_ms, self.isolation = kind, workers, budget_ms, isolation
        self.kills = isolation == "process"     # a worker thread cannot be killed alone
        self.direct = budget_ms == 0          # threads: infer runs the backend on the calling thread


CASES = {
    "inline-1w": Case(Dense, 1), "inline-2w": Case(Dense, 2),
    "shm-1w": Case(Big, 1), "shm-2w": Case(Big, 2),
    # no direct path with micro-batching on a budget (everything through the queue); workers as
    # threads of the daemon: infer runs an idle backend on the calling thread, submit queues
    "inline-2w-budget": Case(Dense, 2, budget_ms=1.0),
    "inline-2w-threads": Case(Dense, 2, isolation="thread"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_input_answered_once_through_kills_and_a_stop_under_traffic(tmp_path, dense_tflite, name):
    case, seed = CASES[name], _seed()
    why = f"{name}, seed {seed} (GANGLION_STRESS_SEED={seed} reproduces the random choices)"
    rng = random.Random(seed)
    model = dense_tflite if case.kind is Dense else tmp_path / "unused.tflite"
    daemon, outbox = make_daemon(model, factory=case.kind.factory, workers=case.workers, max_batch=4,
                                 budget_ms=case.budget_ms, isolation=case.isolation, max_restarts=100,
                                 period=10.0, queue=32)
    daemon.start()
    traffic = Traffic(daemon, case.kind, seed)
    traffic.start()
    kills = 0
    try:
        if case.kills:
            kills = _kill_randomly(daemon, rng, KILL_PHASE_S)
            # every kill is a crash event (the supervisor saw each one), and the workers come back
            killed = lambda: sum("SIGKILL" in e["reason"] for e in _crashes(outbox))    # noqa: E731
            assert wait_for(lambda: killed() >= kills, timeout=15), f"{why}: {kills} kills, {killed()} seen"
            assert wait_for(lambda: all(s.ready_at for s in daemon.pool.slots), timeout=15), f"{why}: no restart"
        else:
            time.sleep(KILL_PHASE_S / 2)
        time.sleep(rng.uniform(0.05, 0.3))
    finally:
        traffic.stopping.set()
        daemon.stop()
        shutdown = threading.Thread(target=daemon.shutdown, daemon=True)
        shutdown.start()
        # sometimes a worker also dies as the stop begins (its crash may or may not be reported:
        # the supervisor may be stopping it already); its requests must still be answered
        late_kill = case.kills and rng.random() < 0.5 and kill_worker(rng.choice(daemon.pool.slots).pid)
        shutdown.join(30)
        assert not shutdown.is_alive(), f"{why}: shutdown hung under traffic"
        time.sleep(TAIL_S)                      # inputs after the shutdown: answered at once
        stuck = traffic.join(30)
    assert not stuck, f"{why}: threads never returned: {stuck}; hung calls: {traffic.hung}"
    assert not traffic.hung, f"{why}: {traffic.hung[:3]}"
    crashes = _crashes(outbox)
    killed = sum("SIGKILL" in e["reason"] for e in crashes)
    poisoned = sum("SIGSEGV" in e["reason"] for e in crashes)
    poisons = sum(map(case.kind.poison, traffic.sent))
    assert killed + poisoned == len(crashes) and killed in (kills, kills + late_kill) and poisoned <= 2 * poisons, \
        f"{why}: {kills} kills (+{int(late_kill)} at the stop), {poisons} poison inputs, " \
        f"crash events {[e['reason'] for e in crashes]}"
    _check_answers(traffic, daemon, kills + late_kill, why)
    direct = daemon.metrics.totals.get("direct_runs", 0) + daemon.metrics.totals.get("direct_sends", 0)
    assert (direct > 0) == case.direct, f"{why}: {direct} requests took a direct path"
    assert len(traffic.sent) > 200 and (kills >= 2 or not case.kills), \
        f"{why}: too little happened ({len(traffic.sent)} inputs, {kills} kills)"
    print(f"\n{why}: {len(traffic.sent)} inputs ({poisons} poison), {kills} kills (+{int(late_kill)} at the stop), "
          f"direct runs {daemon.metrics.totals.get('direct_runs', 0)}, "
          f"direct sends {daemon.metrics.totals.get('direct_sends', 0)}")


# -- the races the stress run can only hit by luck, forced ---------------------------------------
# Each test below freezes the dispatcher where it waits for work by holding the request queue's
# lock (it cannot return from ``Fifo.get`` without it), opening on purpose the window a scheduler
# opens only now and then; what happens next runs on the real code, real worker processes.

def _parked(daemon) -> bool:
    return wait_for(lambda: daemon.pool.idle == len(daemon.pool.slots), timeout=10)


def test_a_job_handed_to_the_dispatcher_as_the_worker_stops_is_still_answered(dense_tflite):
    """submit writes to the idle worker and hands the answer to the dispatcher; the stop begins
    before the dispatcher looks again. The worker answered (the run came before the stop on the
    pipe): that answer must reach the caller. It was lost when the dispatcher, back at the top of
    its loop, saw ``stopping`` and quit with the job still in flight.

    The window: an idle dispatcher whose wait timed out checks that its worker is alive (a
    waitpid, during which other threads run) and loops. The check is wrapped here to let a submit
    and the start of a stop happen inside it, as another thread may."""
    daemon, _ = make_daemon(dense_tflite)
    daemon.start()
    got = Collector()
    handle = daemon.pool.slots[0].handle
    stopper = threading.Thread(target=lambda: (daemon.stop(), daemon.shutdown()), daemon=True)
    is_alive = handle.process.is_alive

    def submit_and_stop_meanwhile():
        alive = is_alive()
        if threading.current_thread().name.startswith("dispatch-") and not stopper.is_alive():
            submitter = threading.Thread(target=daemon.submit,
                                         args=("t", Dense.value(7), {"key": 7}, got.cb(7)))
            submitter.start()
            submitter.join(10)
            stopper.start()
            wait_for(handle.stopping.is_set, timeout=10)
        return alive
    handle.process.is_alive = submit_and_stop_meanwhile
    stopper_started = wait_for(stopper.is_alive, timeout=10)
    stopper.join(30)
    assert stopper_started and not stopper.is_alive(), "shutdown never began, or hung"
    assert daemon.metrics.totals["direct_sends"] == 1      # written from the submitting thread
    assert got.wait(1, timeout=5), "the job handed to the dispatcher was never answered"
    result = got.results[7]
    assert result.ok, result.error
    Dense.check(7, result.outputs)


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
            assert old.lend(Job([req]), wait=True)           # what ``Daemon.infer`` would call
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
    from edge.errors import RuntimeBackendError
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
