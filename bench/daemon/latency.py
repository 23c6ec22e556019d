"""Latency, throughput and RSS of the daemon against the bare interpreter, and the floor under any model.

  floor      once, no model (``child_echo``): a raw pipe round trip between two processes (64
             bytes), two thread hand-offs (a request to another thread and an Event back), and one
             request through a Daemon whose worker runs x -> 2x on four floats (queue + two
             thread hand-offs + two pipe hops + framing + result routing). No model can be served
             with less overhead than the echo: it is the yardstick for the 5% target.
  latency    in one process (``child_daemon``), blocks of 50 calls alternate between the bare
             LiteRT interpreter (set_tensor/invoke/get_tensor, batch 1) and a Daemon with 1 worker
             process and max_batch 1, two ways: "sync" = ``Daemon.infer`` (the calling thread talks
             to the idle worker itself: validation + shared memory + two pipe hops + worker + result
             routing) and "async" = ``Daemon.submit`` + wait for ``on_done`` (what the MQTT, replay
             and camera sources use: adds the queue and two thread hand-offs), RUNS calls each ->
             medians and p95; the first 5 calls of a block are not timed (the other side's threads
             spin down). Pairing matters on a shared machine, where the load changes faster than a
             run lasts. A fourth side in the same rotation: ``Daemon.infer`` with the opt-in
             in-process worker (isolation = "thread": the calling thread runs the backend itself).
  throughput three pairs of rounds: RUNS sequential bare calls, then RUNS requests submitted to
             the daemon at once (open loop: a saturating load) -> inf/s of each, ratio = median of
             the three daemon/bare ratios. Three ways of using the same cores: "mb" one worker with
             greedy micro-batches of up to 8, "w2" two workers with half the threads each, no
             batching, and "mb2" two workers with half the threads each and micro-batches of up to 8
             (the daemon's defaults with workers = cores)
  RSS        bare process (``child_bare``) vs daemon process + its worker after the batch-1 phase
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time

import numpy as np

from daemon.common import SETTLE, Bare, pct_ms, rss_mb, start_daemon

BLOCK = 50              # latency blocks alternate bare/daemon


def child_bare(model: str, runs: int, threads: int) -> dict:
    """A process that only holds the bare interpreter: its RSS is the baseline."""
    bare = Bare(model, threads)
    for _ in range(runs):
        bare()
    return {"rss_mb": rss_mb([os.getpid()])}


def child_daemon(model: str, runs: int, threads: int) -> dict:
    """Paired measurements: bare and daemon blocks alternate in one process, so both see the same
    machine load (this matters on a shared machine: the noise is larger than the effect)."""
    from edge.daemon.benchmark import sample_feeds
    d = start_daemon(model, threads, 1, 0.0, 4 * runs)
    feeds = sample_feeds(d.pool.info.inputs, 1)
    one = _round_trip(d, feeds)
    for _ in range(20):
        one()
    rss_b1 = rss_mb([os.getpid(), *d.pool.pids()])          # before the bare interpreter exists here
    bare = Bare(model, threads)
    for _ in range(20):
        bare()
    inline = start_daemon(model, threads, 1, 0.0, 4 * runs, isolation="thread")    # opt-in, no process
    bare_t, sync_t, daemon_t, inline_t = _paired([bare, lambda: d.infer(dict(feeds)), one,
                                                  lambda: inline.infer(dict(feeds))], runs)
    for x in (d, inline):
        x.stop()
        x.shutdown()
    out = {"bare_ms": pct_ms(bare_t, 50), "sync_ms": pct_ms(sync_t, 50), "daemon_ms": pct_ms(daemon_t, 50),
           "inline_ms": pct_ms(inline_t, 50), "bare_p95_ms": pct_ms(bare_t, 95), "sync_p95_ms": pct_ms(sync_t, 95),
           "daemon_p95_ms": pct_ms(daemon_t, 95), "rss_mb": rss_b1}
    # Throughput under a saturating load, two ways to spend the same cores: one worker with greedy
    # micro-batches of up to 8, or two workers with half the threads each and no batching. Each
    # daemon round is paired with a bare round just before it; the ratio is the median of the pairs.
    half = max(1, threads // 2)
    for key, workers, wthreads, max_batch in (("mb", 1, threads, 8), ("w2", 2, half, 1), ("mb2", 2, half, 8)):
        d = start_daemon(model, wthreads, max_batch, 0.0, 8 * runs, workers=workers)
        _open_loop(d, feeds, 40)                              # warm every worker
        pairs = [(_bare_rate(bare, runs), _open_loop(d, feeds, runs)) for _ in range(3)]
        out[f"bare_{key}_inf_s"] = max(b for b, _ in pairs)
        out[f"{key}_inf_s"] = max(r for _, (r, _) in pairs)
        out[f"{key}_ratio"] = float(np.median([r / b for b, (r, _) in pairs]))
        out[f"{key}_mean_batch"] = round(pairs[-1][1][1], 2)
        d.stop()
        d.shutdown()
    out["bare_inf_s"] = max(out["bare_mb_inf_s"], out["bare_w2_inf_s"], out["bare_mb2_inf_s"])
    return out


def child_echo(runs: int) -> dict:
    """The floor under any model: a raw pipe round trip between two processes, and one request
    through the daemon to a worker whose 'model' is x -> 2x on four floats (no interpreter)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_echo_worker, args=(child,), daemon=True)
    proc.start()
    msg = bytes(64)

    def pipe():
        parent.send_bytes(msg)
        parent.recv_bytes()
    pipe_t = _timed(pipe, 20 * runs)
    parent.close()
    proc.join(5)
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    cfg = from_dict({"model": {"path": "echo.tflite"}, "batch": {"max_batch": 1, "budget_ms": 0},
                     "metrics": {"interval_s": 3600}}).require_model()
    d = Daemon(cfg, outbox=MemoryOutbox(), factory="edge.backends.memory:doubler").start()
    x4 = {"x": np.ones((1, 4), np.float32)}
    echo_t = _timed(_round_trip(d, x4), 20 * runs)
    sync_t = _timed(lambda: d.infer(dict(x4)), 20 * runs)
    d.stop()
    d.shutdown()
    return {"pipe_us": pct_ms(pipe_t, 50) * 1e3, "pipe_p95_us": pct_ms(pipe_t, 95) * 1e3,
            "hops_us": pct_ms(_timed(_two_hops(), 20 * runs), 50) * 1e3,
            "echo_us": pct_ms(echo_t, 50) * 1e3, "echo_p95_us": pct_ms(echo_t, 95) * 1e3,
            "echo_sync_us": pct_ms(sync_t, 50) * 1e3, "echo_sync_p95_us": pct_ms(sync_t, 95) * 1e3}


def _echo_worker(conn) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            return


def _two_hops():
    """A request handed to another thread and its answer handed back, nothing else: the part of
    the echo that any asynchronous submit/on_done API pays in Python."""
    inbox = queue.SimpleQueue()

    def serve():
        while True:
            inbox.get().set()
    threading.Thread(target=serve, daemon=True).start()

    def hop():
        done = threading.Event()
        inbox.put(done)
        done.wait()
    return hop


def _round_trip(d, feeds):
    """One request through the daemon, waiting for its answer (what a batch-1 client sees)."""
    done = threading.Event()

    def one():
        done.clear()
        d.submit("bench", dict(feeds), {}, lambda r: done.set())
        done.wait()
    return one


def _paired(fns, runs: int) -> list[list[float]]:
    """Blocks of BLOCK calls of each function in turn, RUNS timed calls each."""
    times = [[] for _ in fns]
    for _ in range(max(1, runs // BLOCK)):
        for fn, out in zip(fns, times):
            for i in range(BLOCK + SETTLE):
                t0 = time.perf_counter()
                fn()
                if i >= SETTLE:       # the other side's threads may still be spinning down
                    out.append(time.perf_counter() - t0)
    return times


def _timed(fn, n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _bare_rate(bare, runs: int) -> float:
    t0 = time.perf_counter()
    for _ in range(runs):
        bare()
    return runs / (time.perf_counter() - t0)


def _open_loop(d, feeds, n: int) -> tuple[float, float]:
    """Submit n requests at once; inf/s until the last answer, and the mean batch size."""
    count, all_done, lock = [0], threading.Event(), threading.Lock()
    b0, r0 = d.batcher.batches, d.batcher.batched_requests

    def on_done(_):
        with lock:
            count[0] += 1
            if count[0] == n:
                all_done.set()
    t0 = time.perf_counter()
    for _ in range(n):
        d.submit("bench", dict(feeds), {}, on_done)
    all_done.wait()
    rate = n / (time.perf_counter() - t0)
    return rate, (d.batcher.batched_requests - r0) / max(d.batcher.batches - b0, 1)
