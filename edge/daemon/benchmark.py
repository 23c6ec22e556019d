"""Latency of one model on this device, measured the way the daemon's workers run it.

Inputs are random but valid: uniform in the input's quantized range for int8 inputs, standard
normal otherwise, fixed seed, so runs are comparable. Only the ``run`` call is timed.
"""
from __future__ import annotations

import sys
import time

import click
import numpy as np

from edge.backends import open_backend
from edge.daemon.metrics import percentiles


def sample_feeds(specs, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = (batch, *[1 if d < 0 else d for d in spec.sample_shape])
        if np.dtype(spec.dtype).kind in "iu":
            info = np.iinfo(np.dtype(spec.dtype))
            feeds[spec.name] = rng.integers(info.min, info.max, shape, endpoint=True).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def bench_model(model: str, *, runs: int = 200, warmup: int = 20, threads: int | None = None, batch: int = 1,
                backend: str | None = None, board: str | None = None, delegate: str | None = None,
                allow_cpu_fallback: bool = False, progress: bool = False) -> dict:
    be = open_backend(model, board=board, threads=threads, delegate=delegate,
                      allow_cpu_fallback=allow_cpu_fallback, backend=backend)
    feeds = sample_feeds(be.inputs(), batch)
    for _ in range(warmup):
        be.run(feeds)
    times = []
    with click.progressbar(range(runs), label=f"threads={threads}", file=sys.stderr,
                           hidden=not progress) as bar:
        for _ in bar:
            t0 = time.perf_counter()
            be.run(feeds)
            times.append((time.perf_counter() - t0) * 1e3)
    pct = percentiles(times)
    mean = float(np.mean(times))
    row = {"backend": be.name, "threads": threads, "batch": batch, "runs": runs, "warmup": warmup,
           "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"], "mean_ms": round(mean, 4),
           "throughput": round(batch * 1e3 / mean, 2), "events": be.events}
    be.close()
    return row
