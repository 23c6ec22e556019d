"""The model worker: a child process that owns one backend and answers run requests.

Why a process: a segfault in a native kernel or a delegate kills this process only; the
supervisor restarts it and the parent retries the request it held. The worker speaks
``edge.daemon.wire`` frames over a pipe:

    worker -> parent   {"op": "ready", "inputs": [...], "outputs": [...], "events": [...], "manifest": {...}}
                       {"op": "fatal", "error": {...}}          (could not open the model; exits 3)
    parent -> worker   {"op": "run", "id": n} + tensors         -> {"op": "result", "id": n} + tensors
                                                                 | {"op": "error", "id": n, "error": {...}}
    parent -> worker   {"op": "stop"}                            (exits 0; so does a closed pipe)

With ``lanes`` (watched folders, edge/daemon/lane.py) the worker also reads those folders itself
and writes their results to ``sinks``, on threads of its own; the backend is used by one thread at
a time. ``WorkerSpec`` is plain data (paths, numbers, an optional "module:function" factory for
tests), so spawning a worker never sends code or untrusted objects through pickle; the parent
resolves it from the config and the board (spec.py), so a worker never parses either.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

from core.errors import GanglionError
from edge.backends import open_backend
from edge.backends.base import TensorSpec, dequantize_outputs
from edge.daemon import lane, wire
from edge.daemon.shm import Inbound

EXIT_FATAL = 3


@dataclass(frozen=True)
class WorkerSpec:
    model: str
    backend: str | None = None        # resolved in the parent (spec.py): the model's, else its board's
    threads: int | None = None
    delegate: str | None = None
    allow_cpu_fallback: bool = False
    providers: tuple[str, ...] = ()
    engine_cache_dir: str | None = None
    trusted_keys: tuple[str, ...] = ()
    dequantize: bool = True
    factory: str | None = None        # "module:function" returning a backend (tests, plugins)
    factory_args: dict = field(default_factory=dict)
    lanes: tuple[str, ...] = ()                        # watched folders this worker reads itself
    sinks: tuple[tuple[str, str | None], ...] = ()     # (kind, path) of the lanes' sinks


class ModelInfo:
    """What a ready worker says about its model (``ready_header``): specs, preprocessing, labels."""

    def __init__(self, header: dict):
        self.inputs = [TensorSpec.from_dict(d) for d in header["inputs"]]
        self.outputs = [TensorSpec.from_dict(d) for d in header["outputs"]]
        self.backend = header.get("backend")
        self.preprocess = header.get("preprocess") or {}
        self.labels = header.get("labels") or []
        self.model_name = header.get("model_name")
        self.model_version = header.get("model_version")


def open_for(spec: WorkerSpec):
    if spec.factory:
        module, attr = spec.factory.split(":")
        return getattr(importlib.import_module(module), attr)(**spec.factory_args)
    return open_backend(spec.model, threads=spec.threads, delegate=spec.delegate,
                        allow_cpu_fallback=spec.allow_cpu_fallback, trusted_keys=list(spec.trusted_keys),
                        backend=spec.backend, providers=list(spec.providers) or None,
                        engine_cache_dir=spec.engine_cache_dir)


def main(conn, spec: WorkerSpec, name: str = "worker", lane_conn=None) -> None:
    """Entry point of the worker process (``name``: its slot, e.g. worker-0; ``lane_conn``: the
    lanes' reports to the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        backend = open_for(spec)
    except GanglionError as exc:
        conn.send_bytes(wire.encode({"op": "fatal", "error": exc.to_dict()}))
        os._exit(EXIT_FATAL)
    header = ready_header(backend)
    conn.send_bytes(wire.encode(header))
    lock, specs = threading.Lock(), backend.outputs() if spec.dequantize else None

    def run(feeds):
        with lock:
            return run_once(backend, feeds, specs)
    stop = threading.Event()
    lanes = lane.start(name, spec.lanes, spec.sinks, run, ModelInfo(header), lane_conn, stop) \
        if spec.lanes and lane_conn is not None else []
    try:
        serve(conn, run)
    finally:
        stop.set()
        for t in lanes:
            t.join(5.0)


def ready_header(backend) -> dict:
    """What a worker tells the pool once its model is open (``pool.ModelInfo`` reads it)."""
    manifest = getattr(backend, "manifest", None) or {}
    return {"op": "ready", "pid": os.getpid(), "backend": backend.name,
            "inputs": [s.to_dict() for s in backend.inputs()],
            "outputs": [s.to_dict() for s in backend.outputs()],
            "events": backend.events, "preprocess": manifest.get("preprocessing") or {},
            "labels": manifest.get("labels") or [], "model_name": manifest.get("name"),
            "model_version": manifest.get("version")}


def run_once(backend, feeds, dequantize_specs) -> tuple[dict | None, dict | None]:
    """One batch through the backend: (outputs, None) or (None, error dict). Never raises: a
    backend bug answers this request, and the worker lives on."""
    try:
        result = backend.run(feeds)
        if dequantize_specs is not None:
            result = dequantize_outputs(dequantize_specs, result)
        return result, None
    except GanglionError as exc:
        return None, exc.to_dict()
    except Exception as exc:
        return None, {"code": "runtime.inference", "message": f"{type(exc).__name__}: {exc}",
                      "where": getattr(backend, "source", None), "hint": None}


def serve(conn, run) -> None:
    """Answer run requests from the pipe with ``run(feeds) -> (outputs, error)`` until stopped."""
    inbound = Inbound()
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            header, tensors = wire.decode(frame, inbound)
        except GanglionError as exc:
            conn.send_bytes(wire.encode({"op": "error", "id": None, "error": exc.to_dict()}))
            continue
        if header.get("op") == "stop":
            inbound.close()
            return
        rid = header.get("id")
        result, error = run(tensors)
        reply = wire.encode({"op": "result", "id": rid}, result) if error is None else \
            wire.encode({"op": "error", "id": rid, "error": error})
        del tensors, result          # release shared-memory views before the parent reuses the segment
        conn.send_bytes(reply)
