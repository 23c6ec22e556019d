"""The ``shadow`` command: a candidate model beside the current one on live inputs (model-aware canary).

    shadow {"model": "/path/candidate.gpk", "inputs": 32, "timeout_s": 30}
      -> {"inputs": 32, "top1_agreement": 0.97, "cosine": 0.999, "sqnr_db": 31.2, "latency_ratio": 0.92, ...}

1. The next ``inputs`` live requests are tapped as they pass validation (their feeds copied) and
   answered by the current model as usual: the served answer is always the current model's.
2. The candidate runs those feeds in a throwaway worker process (a native crash there kills only
   that process), and so does the current model, in another, for a like-for-like latency ratio.
3. Agreement is measured against the answers that were served: top-1 (arg-max of the first
   output over its last axis), mean cosine and median SQNR over all outputs.

Bounded: at most ``MAX_INPUTS`` inputs and ``MAX_BYTES`` of copied feeds (inputs past that are
served but not tapped), at most ``MAX_TIMEOUT_S`` seconds of waiting for inputs, one shadow run at
a time. Also run by ``deploy.commit`` when the fleet hub passes ``shadow`` (commands.deploy).
"""
from __future__ import annotations

import dataclasses
import statistics
import threading
import time

import numpy as np

from edge.daemon import wire
from edge.daemon.probe import stop_worker
from edge.daemon.worker import main as worker_main
from core.errors import GanglionError, InputError, RuntimeBackendError, UsageError

MAX_INPUTS = 256
MAX_BYTES = 64 << 20
MAX_TIMEOUT_S = 300.0
LOAD_TIMEOUT_S = 60.0
_running = threading.Lock()


def check_args(args: dict) -> tuple[str, int, float]:
    model, n, timeout = args.get("model"), args.get("inputs", 32), args.get("timeout_s", 30.0)
    if not isinstance(model, str) or not model:
        raise UsageError("shadow needs 'model': the candidate's path on the device", code="command.args")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_INPUTS:
        raise UsageError(f"'inputs' must be an integer in 1..{MAX_INPUTS}", code="command.args")
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise UsageError(f"'timeout_s' must be in (0, {MAX_TIMEOUT_S:g}]", code="command.args")
    return model, n, float(timeout)


def shadow(daemon, args: dict) -> dict:
    model, n, timeout = check_args(args)
    if not _running.acquire(blocking=False):
        raise UsageError("a shadow run is already under way on this device", code="command.busy",
                         hint="wait for its reply")
    try:
        pairs = capture(daemon, n, timeout)
        if not pairs:
            raise InputError(f"no live input was answered within {timeout:g}s", code="shadow.no_inputs",
                             hint="a shadow run compares models on live traffic; send inputs, or raise timeout_s")
        feeds = [p[0] for p in pairs]
        spec = daemon.pool.spec
        candidate, cand_ms = run_in_worker(dataclasses.replace(spec, model=model), feeds, daemon.pool.ctx)
        _, current_ms = run_in_worker(spec, feeds, daemon.pool.ctx)
        return compare([p[1] for p in pairs], candidate, cand_ms, current_ms)
    finally:
        _running.release()


def capture(daemon, n: int, timeout: float) -> list[tuple[dict, dict]]:
    """Tap the next ``n`` validated live requests; return (feeds, served outputs) pairs."""
    slots: list[dict] = []
    lock, done = threading.Lock(), threading.Event()
    original = daemon._request

    def tapped(source, value, meta, on_done, live):
        req = original(source, value, meta, on_done, live)
        size = sum(v.nbytes for v in req.feeds.values()) if req is not None else 0
        with lock:
            take = req is not None and len(slots) < n and sum(s["bytes"] for s in slots) + size <= MAX_BYTES
            if take:
                slot = {"feeds": {k: np.array(v, copy=True) for k, v in req.feeds.items()}, "out": None,
                        "bytes": size}
                slots.append(slot)
        if take:
            req.on_done = _served(slot, req.on_done, slots, n, done)
        return req

    daemon._request = tapped
    try:
        done.wait(timeout)
    finally:
        del daemon._request           # the class's method again
    with lock:
        return [(s["feeds"], s["out"]) for s in slots if s["out"] is not None]


def _served(slot: dict, inner, slots: list, n: int, done: threading.Event):
    def on_done(result):
        if result.ok:
            slot["out"] = {k: np.array(v, copy=True) for k, v in result.outputs.items()}
        if sum(s["out"] is not None for s in slots) >= n:
            done.set()
        if inner is not None:
            inner(result)
    return on_done


def run_in_worker(spec, feeds: list[dict], ctx) -> tuple[list[dict | None], list[float]]:
    """Run each feed dict through ``spec``'s model in a throwaway worker: outputs and milliseconds."""
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=worker_main, args=(child, spec), name="ganglion-shadow", daemon=True)
    proc.start()
    child.close()
    outs, times = [], []
    try:
        if not parent.poll(LOAD_TIMEOUT_S):
            raise RuntimeBackendError("the shadow model did not load in time", code="shadow.load")
        header, _ = wire.decode(parent.recv_bytes())
        if header.get("op") == "fatal":
            err = header.get("error") or {}
            raise GanglionError(err.get("message", "the model cannot be opened"), where=err.get("where"),
                                hint=err.get("hint"), code=err.get("code") or "shadow.load")
        for index, tensors in enumerate(feeds):
            start = time.perf_counter()
            parent.send_bytes(wire.encode({"op": "run", "id": index}, tensors))
            if not parent.poll(LOAD_TIMEOUT_S):
                raise RuntimeBackendError("the shadow model did not answer in time", code="shadow.timeout")
            reply, result = wire.decode(parent.recv_bytes())
            times.append((time.perf_counter() - start) * 1e3)
            outs.append({k: np.array(v, copy=True) for k, v in result.items()} if reply.get("op") == "result" else None)
    except (EOFError, OSError) as exc:
        raise RuntimeBackendError(f"the shadow model crashed its worker (exit code {proc.exitcode})",
                                  code="shadow.crash") from exc
    finally:
        stop_worker(parent, proc)
    return outs, times


def compare(served: list[dict], candidate: list[dict | None], cand_ms: list[float], current_ms: list[float]) -> dict:
    agree, cosines, sqnrs, failed = 0, [], [], 0
    for ref, cand in zip(served, candidate):
        if cand is None or set(cand) != set(ref):
            failed += 1
            continue
        first = sorted(ref)[0]
        agree += bool(np.array_equal(np.argmax(ref[first], axis=-1), np.argmax(cand[first], axis=-1)))
        a = np.concatenate([ref[k].astype(np.float64).ravel() for k in sorted(ref)])
        b = np.concatenate([cand[k].astype(np.float64).ravel() for k in sorted(ref)])
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norm) if norm else float(np.array_equal(a, b)))
        noise = float(np.sum((a - b) ** 2))
        sqnrs.append(99.0 if noise == 0 else float(10 * np.log10(max(float(np.sum(a ** 2)), 1e-30) / noise)))
    n = len(served)
    return {"inputs": n, "failed": failed, "top1_agreement": round(agree / n, 4),
            "cosine": round(statistics.fmean(cosines), 6) if cosines else None,
            "sqnr_db": round(statistics.median(sqnrs), 2) if sqnrs else None,
            "candidate_ms": round(statistics.median(cand_ms), 3),
            "current_ms": round(statistics.median(current_ms), 3),
            "latency_ratio": round(statistics.median(cand_ms) / max(statistics.median(current_ms), 1e-9), 3)}
