"""Bounded request queue with backpressure, and the dynamic micro-batcher.

Backpressure: file and MQTT sources ``put`` and block while the queue is full (they never drop);
live sources (a camera) ``put_live``: when full, the oldest frame is dropped and counted -- a
stale frame is worth less than a fresh one.

Micro-batching: a worker's dispatcher calls ``Batcher.take`` when its worker is free; it takes
the oldest request and gathers more until ``max_batch`` or until the oldest has waited
``budget_ms``, whichever comes first. Under light load a request waits at most the budget; under
heavy load batches fill up while the workers are busy and throughput rises. Batching in the
dispatcher's own thread (rather than a batcher thread feeding a job queue) saves one thread
hand-off per request, which is most of the daemon's per-inference overhead. Requests whose sample
shapes differ are never mixed in one batch.
"""
from __future__ import annotations

import threading
import time

from edge.daemon.messages import Fifo, Job, Request


class RequestQueue(Fifo):
    """The daemon's bounded request queue: ``put`` blocks while full, ``put_live`` drops the oldest."""

    def __init__(self, capacity: int, on_drop=lambda req: None):
        super().__init__()
        self.capacity, self.on_drop = capacity, on_drop

    def put(self, req: Request, timeout: float | None = None) -> bool:
        """Block while full (backpressure). False if closed or timed out: the caller answers."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed or len(self._items) < self.capacity, timeout):
                return False
            if self.closed:
                return False
            self._items.append(req)
            self._cond.notify_all()
            return True

    def put_live(self, req: Request) -> None:
        """Never block: drop the oldest when full."""
        with self._cond:
            if len(self._items) >= self.capacity:
                self.on_drop(self._items.popleft())
            self._items.append(req)
            self._cond.notify_all()

    def take_while(self, n: int, keep) -> list[Request]:
        """Up to ``n`` queued requests from the front while ``keep(req)``; one lock for all of
        them (a saturated queue would otherwise cost a lock round per request)."""
        out = []
        with self._cond:
            while self._items and len(out) < n and keep(self._items[0]):
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
        return out


class Batcher:
    def __init__(self, requests: RequestQueue, *, max_batch: int = 8, budget_ms: float = 5.0):
        self.requests = requests
        self.max_batch, self.budget = max(1, max_batch), budget_ms / 1e3
        self.batches = 0
        self.batched_requests = 0
        self._lock = threading.Lock()

    def take(self, timeout: float, wake=None) -> Job | None:
        """The next micro-batch as a Job; None if no request arrived within ``timeout`` or once
        ``wake()`` is true (the caller has other work: a job handed to its worker directly)."""
        return self._take(timeout, self.budget, wake)

    def take_ready(self) -> Job | None:
        """A micro-batch of what is queued right now, without waiting (the job a dispatcher
        writes ahead while its worker is busy: waiting for it to fill would hold up the answer
        the dispatcher is about to read)."""
        if not len(self.requests):         # the usual case at light load: skip the lock
            return None
        return self._take(0.0, 0.0)

    def _take(self, timeout: float, budget: float, wake=None) -> Job | None:
        first = self.requests.get(timeout, wake)
        if first is None:
            return None
        batch = self._gather(first, budget)
        with self._lock:
            self.batches += 1
            self.batched_requests += len(batch)
        return Job(batch)          # its feeds are stacked where they are needed (shared memory)

    def _gather(self, first: Request, budget: float) -> list[Request]:
        batch = [first]
        deadline = first.created + budget
        key = _shape_key(first)
        if self.max_batch > 1:      # what is already queued, in one go; then wait within the budget
            batch += self.requests.take_while(self.max_batch - 1, lambda r: _shape_key(r) == key)
        while len(batch) < self.max_batch and deadline > time.monotonic():
            req = self.requests.get(timeout=deadline - time.monotonic())
            if req is None:
                break
            if _shape_key(req) != key:
                self.requests.put_front(req)      # next batch starts with it
                break
            batch.append(req)
        return batch


def _shape_key(req: Request) -> tuple:
    return tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in req.feeds.items()))
