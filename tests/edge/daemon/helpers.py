"""Build daemons for tests and collect every answer they give."""
from __future__ import annotations

import threading
import time

from edge.daemon.app import Daemon
from edge.daemon.config import from_dict
from edge.daemon.outbox import MemoryOutbox


def make_daemon(model, *, workers=1, max_restarts=3, period=10.0, root_restarts=2, root_period=30.0,
                factory=None, factory_args=None, max_batch=8, budget_ms=0.0, queue=64, sources=(), sinks=(),
                metrics_interval=30.0, request_timeout=30.0, isolation="process"):
    cfg = from_dict({
        "model": {"path": str(model)},
        "workers": {"count": workers, "max_restarts": max_restarts, "period_s": period, "shutdown_s": 2.0,
                    "request_timeout_s": request_timeout, "isolation": isolation},
        "supervisor": {"max_restarts": root_restarts, "period_s": root_period},
        "batch": {"max_batch": max_batch, "budget_ms": budget_ms, "queue_size": queue},
        "metrics": {"interval_s": metrics_interval},
        "sources": list(sources), "sinks": list(sinks)}).require_model()
    outbox = MemoryOutbox()
    return Daemon(cfg, outbox=outbox, factory=factory, factory_args=factory_args), outbox


class Collector:
    """``on_done`` callbacks that remember every result by a caller-chosen key."""

    def __init__(self):
        self.results: dict = {}
        self.lock = threading.Lock()
        self.duplicates = 0

    def cb(self, key):
        def on_done(result):
            with self.lock:
                if key in self.results:
                    self.duplicates += 1
                self.results[key] = result
        return on_done

    def wait(self, n: int, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.results) >= n:
                    return True
            time.sleep(0.01)
        return False


def wait_for(cond, timeout=10.0, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def drop_npy(folder, name: str, arr) -> None:
    """Put an .npy into a watched folder the way writers must (docs/daemon.md): write it under a
    name the source ignores, then rename it into place -- a file written in place can be read
    half-written."""
    import os

    import numpy as np
    tmp = folder / f".{name}.part"
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, folder / name)


def sigterm(proc, timeout: float = 30.0) -> str:
    """Stop a ``ganglion run`` subprocess the way systemd does (SIGTERM) and return its stderr;
    SIGKILL if it has not exited within ``timeout`` (the caller then sees a non-zero exit)."""
    import signal
    import subprocess
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]
