"""Model worker processes and the dispatchers that feed them; the retry-once rule lives here.

Each ``WorkerSlot`` is one supervised child. Starting it spawns a worker process
(``edge.daemon.worker.main``) and a dispatcher thread bound to that process's pipe. The
dispatcher takes a retry from the pool's ``JobQueue`` if there is one, else a fresh micro-batch
from the batcher (``take``), sends it, and waits for the answer. When the
pipe breaks mid-job, the process died (SIGKILL, a segfault in a kernel): the job goes back to the
front of the queue, split into single requests so a poison sample cannot take its batch-mates
down with it, and each is tried once more. A request whose second attempt also dies is answered
with a ``runtime.worker_crash`` error. A worker that does not answer within the request timeout
(a hung delegate) is killed and handled the same way. Nothing is dropped: on shutdown, whatever is still queued
is answered with an error too.

Who writes to a worker: two ways, one lease. Its dispatcher thread, for everything queued
(``Daemon.submit``, the sources on the parent's side, retries), and the thread of a synchronous
``Daemon.infer`` that finds the worker idle and nothing queued (``WorkerPool.run_direct``): it
takes the lease, writes its request and reads its own answer -- no thread hand-off at all (on a
small board or a VM a hand-off costs as much as the pipe round trip). What it leaves in flight
(jobs it wrote ahead for other inputs; its own once its timeout passed) is handed to the
dispatcher (``handed``). Watched folders with file sinks do not come here at all: the workers read
them themselves (edge/daemon/lane.py). See docs/request-path.md for the invariants and the stress
test. The crash rules are the same on both ways: the same code (``WorkerHandle._send``/``_drain``)
runs whoever holds the lease.
"""
from __future__ import annotations

import json
import multiprocessing
import select
import threading
import time
from collections import deque
from typing import Callable

from core.errors import GanglionError, error_from_dict
from edge.daemon import wire
from edge.daemon.inline import InlineWorker
from edge.daemon.messages import Job, JobQueue, Result, error_dict
from edge.daemon.shm import SLOTS, Outbound
from edge.daemon.worker import ModelInfo, WorkerSpec, main as worker_main
from edge.supervisor import ProcessChild

MAX_ATTEMPTS = 2
PIPELINE = SLOTS           # jobs written ahead to one worker; each has its own shared-memory segment
READY_TIMEOUT = 120.0      # a TensorRT engine build on first start can take this long


class WorkerPool:
    def __init__(self, spec: WorkerSpec, count: int, *, deliver: Callable[[Result], None],
                 on_event: Callable[[dict], None], start_method: str = "spawn", request_timeout: float = 0.0,
                 isolation: str = "process", deliver_many: Callable[[list[Result]], None] | None = None,
                 lanes=None):
        self.spec, self.deliver, self.on_event = spec, deliver, on_event
        self.lanes = lanes                  # lane.Lanes when workers read watched folders themselves
        self.deliver_many = deliver_many or (lambda results: [deliver(r) for r in results])
        self.isolation = isolation
        self.request_timeout = request_timeout
        self.jobs = JobQueue()                          # retries only: bounded by the request queue
        self.take: Callable[[float], Job | None] = lambda timeout: None   # set to Batcher.take
        self.take_ready: Callable[[], Job | None] = lambda: None          # set to Batcher.take_ready
        self.backlog: Callable[[], int] = lambda: 0                       # set to len(RequestQueue)
        self.nudge: Callable[[], None] = lambda: None     # wakes dispatchers waiting in ``take``
        self.ctx = multiprocessing.get_context(start_method)
        self.slots = [WorkerSlot(f"worker-{i}", self) for i in range(count)]
        self.info: ModelInfo | None = None
        self.ready = threading.Event()
        self.last_fatal: dict | None = None
        self.idle = 0                           # dispatchers waiting for work, their worker free
        self._idle_lock = threading.Lock()

    def wait_for_job(self, timeout: float, wake: Callable[[], bool]) -> Job | None:
        """``take``, counted as an idle worker while it waits (see ``WorkerHandle._top_up``);
        returns None early once ``wake()`` is true (a job was handed over, see ``run_direct``)."""
        with self._idle_lock:
            self.idle += 1
        try:
            return self.take(timeout, wake)
        finally:
            with self._idle_lock:
                self.idle -= 1

    def run_direct(self, job: Job, timeout: float | None = None) -> bool:
        """Send ``job`` from the calling thread to an idle worker and read and route its answer
        here; False when no worker is idle or work is queued (never jumps the queue). When this
        returns True, ``on_done`` was called (or the job is queued for its retry, its worker
        having died under it, or -- no answer within ``timeout`` -- left to the dispatcher)."""
        if len(self.jobs) or self.backlog():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        for slot in self.slots:
            handle = slot.handle
            if handle is not None and handle.lend(job, deadline):
                return True
        return False

    def set_info(self, header: dict) -> None:
        if self.info is None:
            self.info = ModelInfo(header)
        self.ready.set()
        for event in header.get("events") or []:
            self.on_event(event)

    def pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid]

    def requeue(self, job: Job) -> None:
        """Put ``job`` back at the front of the retry queue, and wake the dispatchers waiting in
        ``take`` (they would look at the retry queue only when their wait timed out). Once the
        queue is closed (shutdown) nobody would take it: it is answered with an error at once."""
        if not self.jobs.put_front(job):
            self.answer_error(job, error_dict("runtime.unavailable", "the daemon is stopping",
                                              hint="see the daemon's events for why the workers stopped"))
            return
        self.nudge()

    def fail_pending(self, reason: str) -> int:
        """Answer every queued job with an error (shutdown, or the workers' supervisor gave up)."""
        jobs = self.jobs.drain()
        for job in jobs:
            self.answer_error(job, error_dict("runtime.unavailable", reason,
                                              hint="see the daemon's events for why the workers stopped"))
        return sum(len(j.requests) for j in jobs)

    def answer(self, job: Job, tensors: dict, worker: str, now: float) -> None:
        """Split a batch's outputs back into one result per request, in order."""
        if len(job.requests) == 1:
            req = job.requests[0]
            self.deliver(Result(req, outputs=tensors, latency_ms=(now - req.created) * 1e3,
                                worker=worker, attempts=job.attempts + 1))
            return
        start, results = 0, []
        for req in job.requests:
            n = _samples(req)
            results.append(Result(req, outputs={k: v[start:start + n] for k, v in tensors.items()},
                                  latency_ms=(now - req.created) * 1e3, worker=worker, attempts=job.attempts + 1))
            start += n
        self.deliver_many(results)

    def answer_error(self, job: Job, err: dict, worker: str | None = None) -> None:
        now = time.monotonic()
        for req in job.requests:
            self.deliver(Result(req, error=err, latency_ms=(now - req.created) * 1e3, worker=worker,
                                attempts=job.attempts))


class WorkerSlot:
    def __init__(self, name: str, pool: WorkerPool):
        self.name, self.pool = name, pool
        self.pid: int | None = None
        self.ready_at: float | None = None      # monotonic time the current process said ready
        self.generation = 0
        self.handle = None      # the current WorkerHandle (or InlineWorker): direct runs go through it

    def start(self):
        if self.pool.isolation == "thread":
            self.pid, self.ready_at = None, None
            self.generation += 1
            self.handle = InlineWorker(self)
            return self.handle
        lanes, previous = self.pool.lanes, self.handle
        if lanes is not None:       # what the last process claimed: retried once, or answered
            lanes.recover(self.name, crashed=previous is not None and not previous.stopping.is_set())
        parent_conn, child_conn = self.pool.ctx.Pipe(duplex=True)
        lane_read, lane_write = self.pool.ctx.Pipe(duplex=False) if lanes is not None else (None, None)
        proc = self.pool.ctx.Process(target=worker_main, args=(child_conn, self.pool.spec, self.name, lane_write),
                                     name=f"ganglion-{self.name}", daemon=True)
        proc.start()
        for conn in (child_conn, lane_write):
            if conn is not None:
                conn.close()        # so a dead worker shows up as EOF on our end
        self.pid, self.ready_at = proc.pid, None
        self.generation += 1
        self.handle = WorkerHandle(self, proc, parent_conn, lane_read)
        return self.handle


class WorkerHandle(ProcessChild):
    """A running worker process plus the dispatcher thread that talks to it."""

    def __init__(self, slot: WorkerSlot, proc, conn, lane_conn=None):
        super().__init__(proc, slot.name)
        self.slot, self.conn, self.lane_conn = slot, conn, lane_conn
        self.stopping = threading.Event()
        self._send_lock = threading.Lock()      # stop() and the lease holder both write to the pipe
        # Whoever holds the lease owns the pipe, ``inflight`` and ``outbound``: the dispatcher while
        # it has jobs in flight (and until the worker is ready), or a direct caller (``lend``).
        self.lease = threading.Lock()
        self.lease.acquire()
        self.broken = False                     # the pipe broke: nobody may use it again
        self.handed = False                     # a direct caller left jobs in flight: the dispatcher drains them
        self.outbound = Outbound()              # large inputs go through shared memory
        self.inflight: deque[Job] = deque()     # sent, not yet answered; oldest first
        # a poll object made once: Connection.poll builds a selector per call, a few us each time
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)
        self._thread = threading.Thread(target=self._dispatch, name=f"dispatch-{slot.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        try:
            with self._send_lock:
                self.conn.send_bytes(wire.encode({"op": "stop"}))
        except (OSError, ValueError):
            pass
        self.process.join(min(timeout, 1.0))
        super().stop(timeout)
        self._thread.join(timeout)
        self.conn.close()
        if self.lane_conn is not None:
            self.lane_conn.close()

    def lend(self, job: Job, deadline: float | None = None) -> bool:
        """Send ``job`` from the calling thread if this worker is idle (see the module docstring)
        and read and route its answer here, until ``deadline`` (a monotonic time); what is still
        in flight then is the dispatcher's."""
        if not self.lease.acquire(blocking=False):
            return False
        try:
            if self.broken or self.stopping.is_set() or self.inflight:
                return False
            if self._send(job):
                self._drain(own=job, deadline=deadline)
                # what is still in flight (its own job past the deadline, or jobs the caller wrote
                # ahead for other inputs) is the dispatcher's to answer
                self.handed = bool(self.inflight)
            return True
        finally:
            self.lease.release()
            if self.handed:
                self.slot.pool.nudge()

    # -- dispatcher ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            if self._await_ready():
                self.lease.release()
                self._serve()
                self.lease.acquire()        # a direct caller may still be reading its answer
                # A direct caller may have handed a job over just as the loop saw ``stopping`` (or its
                # worker's death): its answer is ours to read -- the worker got the run before any
                # stop, and a dead pipe sends the job back to the queue through ``_lost_all``.
                if self.inflight:
                    self._drain()
        finally:
            self.outbound.close()
            self._lane_reports()            # the last tallies of a worker that stopped or died

    def _serve(self) -> None:
        """Take a job (retries first) or a handed-over one, answer it and whatever the pipeline
        picks up, repeat."""
        pool = self.slot.pool
        # the wake-up condition of ``take``: a job handed over, or a retry queued (``requeue``)
        wake = lambda: self.handed or len(pool.jobs) > 0      # noqa: E731
        while not self.stopping.is_set() and not self.broken:
            self._lane_reports()
            job = None if self.handed else \
                (pool.jobs.get(timeout=0) if len(pool.jobs) else None) or pool.wait_for_job(0.2, wake)
            if job is None and not self.handed:
                if not self.process.is_alive():
                    return
                continue
            with self.lease:
                self.handed = False
                if self.broken:                 # a submitter saw the worker die meanwhile
                    if job is not None:
                        pool.requeue(job)           # not this job's fault: no retry used up
                    return
                if job is None or self._send(job):
                    self._drain()

    def _lane_reports(self) -> None:
        """What this worker's lanes reported (events, tallies) since the last look; read when the
        dispatcher loops, at least every 0.2 s -- never a wake-up per input."""
        conn, lanes = self.lane_conn, self.slot.pool.lanes
        try:
            while conn is not None and conn.poll(0):
                lanes.report(json.loads(conn.recv_bytes()))
        except (EOFError, OSError, ValueError):
            self.lane_conn = None           # the worker is gone; its claims are recovered on restart

    def _drain(self, own: Job | None = None, deadline: float | None = None) -> None:
        """Answer the jobs in flight, in order; while the worker computes, write the next job ahead.

        Up to ``PIPELINE`` jobs are in the pipe, so the worker never waits for the parent to
        route a result and take a new batch -- unless another worker is idle, which would start
        that job sooner. Retries are never pipelined: a retried request runs alone, so a poison
        input that kills the worker again cannot take a pipelined neighbour's second chance with
        it. Returns once nothing is in flight (or the pipe broke: ``broken`` is then set) -- or,
        for a direct caller, once its ``own`` job is answered: writing ahead keeps refilling the
        pipeline while the queue is busy, and the caller must not go on serving other inputs
        (past its own timeout) for as long as the traffic lasts. Past the caller's ``deadline``
        it returns too, its job still in flight: the dispatcher reads that answer."""
        pool, inflight = self.slot.pool, self.inflight
        while inflight:
            if not self.stopping.is_set() and not self._top_up(pool, inflight):
                return
            if deadline is not None and self._past(deadline):
                return
            try:
                self._await_answer()
                frame = self.conn.recv_bytes()
            except (EOFError, OSError, ValueError):
                self._lost_all(inflight)
                return
            job = inflight.popleft()
            self._answer(job, frame)
            if job is own:
                return

    def _past(self, deadline: float) -> bool:
        """A direct caller's wait: True when its deadline passed before the worker answered. A
        deadline beyond the request timeout is left to ``_await_answer``, so that a hung worker is
        still killed on time."""
        left, timeout = deadline - time.monotonic(), self.slot.pool.request_timeout
        return (not timeout or left < timeout) and not self._poller.poll(max(0.0, left) * 1e3)

    def _top_up(self, pool: WorkerPool, inflight: deque) -> bool:
        """Write queued work ahead while the pipeline has room; False if the pipe broke."""
        while len(inflight) < PIPELINE and inflight[-1].attempts == 0 and not len(pool.jobs) and not pool.idle:
            job = pool.take_ready()
            if job is None:
                return True
            if not self._send(job):
                return False
        return True

    def _send(self, job: Job) -> bool:
        # The first shared-memory segment not used by a job in flight: one request at a time
        # keeps reusing segment 0, which stays in the caches of both processes.
        job.slot = next(i for i in range(SLOTS) if all(j.slot != i for j in self.inflight))
        self.inflight.append(job)
        try:
            with self._send_lock:
                self.conn.send_bytes(wire.encode({"op": "run", "id": job.requests[0].id}, job.parts(),
                                                 self.outbound, job.slot))
        except (OSError, ValueError):
            # The write failed, so the worker never read this whole frame (it died before, e.g. a
            # SIGKILL while idle, or stop() closed the pipe): back to the queue, its retry not used
            # up. Put first, so that the jobs written before it go back ahead of it.
            self.inflight.pop()
            self.slot.pool.requeue(job)
            if self.inflight:
                self._lost_all(self.inflight)
            self.broken = True
            return False
        return True

    def _lost_all(self, inflight: deque) -> None:
        """The pipe broke. Answers arrive before EOF, so the oldest job in flight is the one the
        worker was running (or about to run) when it died; the later ones were never started
        and go back to the queue without using up their retry."""
        self.broken = True
        jobs = list(inflight)
        inflight.clear()
        for job in reversed(jobs[1:]):
            self.slot.pool.requeue(job)
        self._lost(jobs[0])

    def _await_answer(self) -> None:
        """A hung kernel or delegate is a crash too: past the request timeout, kill the worker
        (the pipe then reports EOF and the usual retry-once path answers the request)."""
        timeout = self.slot.pool.request_timeout
        if timeout and not self._poller.poll(timeout * 1e3):
            self.slot.pool.on_event({"event": "worker_hang", "worker": self.slot.name,
                                     "reason": f"no answer within {timeout:g}s; killing it"})
            self.process.kill()

    def _await_ready(self) -> bool:
        pool = self.slot.pool
        try:
            if not self.conn.poll(READY_TIMEOUT):
                raise EOFError
            header, _ = wire.decode(self.conn.recv_bytes())
        except (EOFError, OSError, GanglionError):
            return False
        if header.get("op") == "fatal":
            pool.last_fatal = header.get("error")
            pool.on_event({"event": "worker_fatal", "worker": self.slot.name, "error": header.get("error")})
            return False
        pool.set_info(header)
        self.slot.ready_at = time.monotonic()
        return True

    def _answer(self, job: Job, frame: bytes) -> None:
        pool, now = self.slot.pool, time.monotonic()
        try:
            header, tensors = wire.decode(frame)
        except GanglionError as exc:
            pool.answer_error(job, exc.to_dict(), self.slot.name)
            return
        if header.get("op") != "result":
            pool.answer_error(job, header.get("error") or error_dict("runtime.inference", "worker error"),
                              self.slot.name)
            return
        pool.answer(job, tensors, self.slot.name, now)

    def _lost(self, job: Job) -> None:
        """The worker died holding ``job``: retry each request once, then answer with an error."""
        pool = self.slot.pool
        self.exited.wait(2.0)
        reason = f"worker {self.slot.name} died ({self.exit.reason if self.exit else 'no exit status yet'})"
        if self.stopping.is_set():
            pool.requeue(job)                   # we stopped it: not the request's fault
            return
        job.attempts += 1
        if job.attempts >= MAX_ATTEMPTS:
            pool.answer_error(job, error_dict("runtime.worker_crash",
                                              f"the request crashed the worker twice; {reason}",
                                              hint="the input may trigger a bug in the model's kernels"),
                              self.slot.name)
            return
        singles = [Job([req], attempts=job.attempts, first_error=reason) for req in job.requests]
        for one in reversed(singles):
            pool.requeue(one)


def _samples(req) -> int:
    return next(iter(req.feeds.values())).shape[0] if req.feeds else 1


def fatal_error(pool: WorkerPool) -> GanglionError | None:
    """The worker's own report of why the model could not be opened, as a typed error of its own
    class (a bad signature stays a permanent error, a missing delegate a runtime one)."""
    if not pool.last_fatal:
        return None
    err = dict(pool.last_fatal)
    err.setdefault("message", "worker could not open the model")
    return error_from_dict(err)
