"""Open a model in a throwaway worker process and report what it offers, or why it cannot load.

Used before a reload or deploy swaps models: the running workers keep serving until the new
model has proved that it loads (a native crash while loading kills only the probe).
"""
from __future__ import annotations

from core.errors import GanglionError, RuntimeBackendError
from edge.daemon import wire
from edge.daemon.worker import WorkerSpec, main as worker_main

PROBE_TIMEOUT = 60.0


def probe(spec: WorkerSpec, ctx) -> dict:
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=worker_main, args=(child, spec), name="ganglion-probe", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(PROBE_TIMEOUT):
            raise RuntimeBackendError("the model did not load in time", code="runtime.probe")
        header, _ = wire.decode(parent.recv_bytes())
    except (EOFError, OSError) as exc:
        proc.join(1.0)
        raise RuntimeBackendError(f"the model crashed its worker while loading (exit code {proc.exitcode})",
                                  code="runtime.probe") from exc
    finally:
        stop_worker(parent, proc)
    if header.get("op") == "fatal":
        err = header.get("error") or {}
        raise GanglionError(err.get("message", "the model cannot be opened"), where=err.get("where"),
                            hint=err.get("hint"), code=err.get("code") or "runtime.backend")
    return header


def stop_worker(parent, proc) -> None:
    """Ask a throwaway worker to stop, kill it if it lingers, close our end (probe and shadow runs)."""
    try:
        parent.send_bytes(wire.encode({"op": "stop"}))
    except (OSError, ValueError):
        pass
    proc.join(2.0)
    if proc.is_alive():
        proc.kill()
        proc.join(1.0)
    parent.close()
