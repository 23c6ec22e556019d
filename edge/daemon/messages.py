"""What flows through the daemon: requests from sources, jobs for workers, results for sinks.

A ``Request`` is one sample (feeds with a batch axis of 1) plus where it came from; its
``on_done`` is called exactly once with its ``Result`` -- a result or an error, never silence.
``JobQueue`` holds jobs to retry after a worker crash; dispatchers look there before taking a
new batch, so a crash does not reorder work behind newer requests.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

_ids = itertools.count(1)


@dataclass
class Request:
    source: str
    feeds: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    on_done: Callable[["Result"], None] | None = None
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.monotonic)


@dataclass
class Result:
    request: Request
    outputs: dict[str, np.ndarray] | None = None
    error: dict | None = None
    latency_ms: float = 0.0
    worker: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self, labels: list[str] | None = None) -> dict:
        """The JSON shape every sink writes (JSONL line, MQTT results payload, stdout)."""
        rec = {"id": self.request.id, "source": self.request.source, **self.request.meta,
               "ok": self.ok, "latency_ms": round(self.latency_ms, 3), "worker": self.worker}
        if self.ok:
            rec["outputs"] = {k: v[0].tolist() if v.shape[:1] == (1,) else v.tolist()
                              for k, v in self.outputs.items()}
            top = _top1(self.outputs, labels)
            if top is not None:
                rec["top1"] = top
        else:
            rec["error"] = self.error
        return rec


def _top1(outputs: dict[str, np.ndarray], labels: list[str] | None):
    """For a single classifier output, the arg-max (and its label when the manifest has labels)."""
    if len(outputs) != 1:
        return None
    value = next(iter(outputs.values()))
    if value.ndim != 2 or value.shape[0] != 1 or value.shape[1] < 2 or value.dtype.kind != "f":
        return None
    idx = int(np.argmax(value[0]))
    return {"index": idx, "label": labels[idx]} if labels and idx < len(labels) else {"index": idx}


def error_dict(code: str, message: str, hint: str | None = None, where: str | None = None) -> dict:
    return {"code": code, "message": message, "where": where, "hint": hint}


class Job:
    """One batch for a worker: its requests, in order, and their feeds along the batch axis."""

    def __init__(self, requests: list[Request], attempts: int = 0, first_error: str | None = None):
        self.requests, self.attempts, self.first_error = requests, attempts, first_error
        self.slot = -1                   # the worker's shared-memory segment it was sent in
        self._feeds: dict[str, np.ndarray] | None = None

    def parts(self) -> dict[str, list[np.ndarray]]:
        """Each input as its requests' arrays (what ``wire.encode`` copies into shared memory)."""
        return {name: [r.feeds[name] for r in self.requests] for name in self.requests[0].feeds}

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        """Each input as one array (concatenated once, when something needs it whole)."""
        if self._feeds is None:
            first = self.requests[0].feeds
            self._feeds = first if len(self.requests) == 1 else \
                {name: np.concatenate([r.feeds[name] for r in self.requests], axis=0) for name in first}
        return self._feeds


class Fifo:
    """A thread-safe FIFO with a front door (retries, a request put back) and ``close`` to release
    every waiter. ``RequestQueue`` (batcher.py) adds the bound and backpressure on top of it."""

    def __init__(self):
        self._items: deque = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def put_front(self, item) -> None:
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify_all()

    def get(self, timeout: float, wake=None):
        """The oldest item, or None after ``timeout`` seconds, once closed and empty, or as soon as
        ``wake()`` is true (checked whenever the queue is nudged, see ``wake_all``)."""
        with self._cond:
            ready = (lambda: self._items or self.closed) if wake is None else \
                (lambda: self._items or self.closed or wake())
            if not self._cond.wait_for(ready, max(timeout, 0.0)) or (wake is not None and wake()):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def drain(self) -> list:
        with self._cond:
            items, self._items = list(self._items), deque()
            self._cond.notify_all()
            return items

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wake_all(self) -> None:
        """Make every waiter in ``get`` look at its ``wake`` condition again."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class JobQueue(Fifo):
    """Jobs to retry after a worker crash; dispatchers look here before taking a new batch."""

    def put_front(self, item) -> bool:
        """False once closed: at shutdown the queue is closed, then drained and answered, and a
        job put back after that (a worker thread finishing late) must be answered by the caller,
        not left where nobody looks."""
        with self._cond:
            if self.closed:
                return False
            self._items.appendleft(item)
            self._cond.notify_all()
            return True
