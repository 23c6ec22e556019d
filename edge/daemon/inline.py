"""The opt-in in-process worker (``[workers] isolation = "thread"``): the backend runs in a thread
of the daemon itself.

Why it exists: a request to a worker process crosses two pipes and two more thread wake-ups; on
the development machine that floor is ~0.1 ms, which is 15x the digits CNN's whole inference.
For tiny models on trusted runtimes, running the backend in the dispatcher's own thread removes
that floor. What it gives up, and why it is not the default: a segfault in a native kernel or a
delegate kills the whole daemon (systemd restarts it; nothing queued in memory survives, though
watched-folder files are read again), and a hung kernel cannot be killed (``request_timeout_s``
does not apply). A Python-level exception from the backend is still answered per request.

Supervision is unchanged: the thread is a ``ThreadChild`` under the workers' supervisor, so a
backend that fails to open is a crash with a ``worker_fatal`` event, restarted with the same
intensity limits as a process.

``Daemon.infer`` on an idle in-process worker runs the backend on the calling thread (``lend``,
under the worker's ``lease``), so a synchronous caller pays no thread hand-off at all. An
asynchronous ``submit`` still goes through the queue: running the model on a source's thread
would stall the source.
"""
from __future__ import annotations

import threading
import time

from core.errors import GanglionError
from edge.daemon.worker import open_for, ready_header, run_once
from edge.supervisor import ThreadChild


class InlineWorker(ThreadChild):
    def __init__(self, slot):
        self.slot = slot
        self.lease = threading.Lock()       # whoever holds it may use the backend
        self._ready: tuple | None = None    # (backend, output specs) once open
        super().__init__(self._body, slot.name)

    def lend(self, job, deadline: float | None = None) -> bool:
        """Run ``job`` on the calling thread if the backend is idle (``Daemon.infer``; a running
        kernel cannot be interrupted, so ``deadline`` does not apply here)."""
        if self._ready is None or not self.lease.acquire(blocking=False):
            return False
        try:
            if self._ready is None:
                return False
            self._one(job, *self._ready)
            return True
        finally:
            self.lease.release()

    def _body(self, stop) -> None:
        pool = self.slot.pool
        try:
            backend = open_for(pool.spec)
        except GanglionError as exc:
            pool.last_fatal = exc.to_dict()
            pool.on_event({"event": "worker_fatal", "worker": self.slot.name, "error": exc.to_dict()})
            raise
        try:
            pool.set_info(ready_header(backend))
            self.slot.ready_at = time.monotonic()
            specs = backend.outputs() if pool.spec.dequantize else None
            self._ready = (backend, specs)
            while not stop.is_set():
                job = (pool.jobs.get(timeout=0) if len(pool.jobs) else None) or pool.take(0.2)
                if job is not None:
                    with self.lease:
                        self._one(job, backend, specs)
        finally:
            with self.lease:
                self._ready = None
                backend.close()

    def _one(self, job, backend, specs) -> None:
        pool = self.slot.pool
        outputs, error = run_once(backend, job.feeds, specs)
        if error is not None:
            pool.answer_error(job, error, self.slot.name)
        else:
            pool.answer(job, outputs, self.slot.name, time.monotonic())
