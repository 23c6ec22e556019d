"""What a model worker process is started with, resolved in the parent (``worker_spec``).

The parent has parsed the daemon's config and the board file already (pydantic, the board
schema); a worker gets the outcome as plain values in ``worker.WorkerSpec`` -- the board's
runtime choices merged under the model's own -- so it never parses config, and spawning one
imports neither pydantic nor ``boards`` (``bench/worker_import_bench.py`` measures it). A board
that does not load fails here, in the parent, before any worker starts.
"""
from __future__ import annotations

import boards
from edge.backends.open import board_runtime
from edge.daemon import lane
from edge.daemon.worker import WorkerSpec


def worker_spec(cfg, factory: str | None = None, factory_args: dict | None = None) -> WorkerSpec:
    """The spec of ``cfg``'s workers; the watched folders they read themselves come from the
    config too, so a reload (commands.py) keeps them. Raises BoardError for a bad board."""
    m, lanes = cfg.model, lane.lane_folders(cfg)
    runtime = board_runtime(boards.load(cfg.board)) if cfg.board else {}
    return WorkerSpec(model=m.path, backend=m.backend or runtime.get("backend"),
                      threads=m.threads or runtime.get("threads"),
                      delegate=m.delegate or runtime.get("delegate"), allow_cpu_fallback=m.allow_cpu_fallback,
                      providers=tuple(m.providers or runtime.get("providers") or ()),
                      engine_cache_dir=m.engine_cache_dir or runtime.get("engine_cache_dir"),
                      trusted_keys=tuple(m.trusted_keys), dequantize=m.dequantize, factory=factory,
                      factory_args=factory_args or {}, lanes=lanes,
                      sinks=tuple((s.kind, s.path) for s in cfg.sinks) if lanes else ())
