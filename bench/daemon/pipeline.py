"""The source -> sink path with a worker process (edge/daemon/lane.py), against the same I/O in one process.

A watched folder of .npy inputs -> model -> a JSONL file, files moved to done/. Three sides take
turns in blocks of PIPE_BLOCK inputs: "bare" = the bare interpreter alone (the inference, no I/O),
"inproc" = one process running the same folder and sink code around an in-process interpreter (no
daemon, no worker: what a hand-written loop with the same I/O costs), and "daemon" = ``Daemon``
with a folder source and a JSONL sink, where the worker process reads the folder and writes the
results itself while the parent supervises. A fourth side, "parent", is the same daemon with
the worker lanes switched off: the parent's folder source submits each input, the worker answers
over the pipe and the parent writes the sink -- the request path that MQTT inputs and the mqtt
sink take. A block's time per input is (last done - first done)
/ (n - 1), seen by this process polling done/ every ms (it runs on neither side), so the folder's
0.1 s scan interval does not count. pipe_overhead = daemon / inproc - 1 (target <= 5%: what the
worker process adds); pipe_vs_bare = daemon / bare - 1 (also counts the file I/O and JSON the bare
loop skips). The inproc and daemon sides are child processes of their own; the CPU time of all
their threads (daemon: parent + worker) per input is summed over the blocks from
/proc/PID/task/TID/schedstat -> pipe_cpu_overhead, a figure that a loaded machine disturbs far
less than wall time. pipe_parent_overhead / pipe_parent_cpu_overhead are the same figures for
the parent side, and pipe_parent_vs_lane_cpu = parent CPU / daemon CPU - 1 is what the parent's
request path costs per input against a lane.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from daemon.common import SCRIPT, SETTLE, Bare, start_daemon

PIPE_BLOCK = 50         # inputs per block of the source -> sink comparison
SIDES = ("inproc", "daemon", "parent")      # child processes; "bare" runs in the pipeline child itself


def child_inproc(model: str, folder: str, out: str, threads: int) -> None:
    """The source -> sink loop without a daemon: the folder source and JSONL sink code the worker
    runs (``lane.LaneHost``) around an interpreter in this process, until stdin closes."""
    from edge.backends import open_backend
    from edge.daemon.lane import LaneHost
    from edge.daemon.sinks import make_sink
    from edge.daemon.sources import FolderSource
    from edge.daemon.worker import ModelInfo, ready_header, run_once
    backend = open_backend(model, threads=threads)
    specs = backend.outputs()
    host = LaneHost("inproc", lambda feeds: run_once(backend, feeds, specs), ModelInfo(ready_header(backend)),
                    [make_sink("jsonl", path=out)], send=lambda msg: None)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"pids": [os.getpid()]}), flush=True)
    FolderSource(host, folder).run(stop)


def child_lane_daemon(model: str, folder: str, out: str, threads: int, lanes: bool = True) -> None:
    """A daemon whose worker reads ``folder`` and writes ``out`` itself, until stdin closes; with
    ``lanes=False`` the same daemon and files on the parent's request path instead (the parent's
    folder source submits, the worker answers over the pipe, the parent writes the sink): the path
    that MQTT inputs and the mqtt sink take (docs/daemon.md says why they stay there)."""
    from edge.daemon import lane
    if not lanes:
        lane.LANE_SINKS = frozenset()         # no sink qualifies: lane_folders() gives the worker none
    d = start_daemon(model, threads, 1, 0.0, 64, sources=[{"kind": "folder", "path": folder}],
                     sinks=[{"kind": "jsonl", "path": out}])
    if bool(d.lane_sources) != lanes:
        raise SystemExit(f"the daemon {'did not give' if lanes else 'gave'} the folder to its worker")
    print(json.dumps({"pids": [os.getpid(), *d.pool.pids()]}), flush=True)
    sys.stdin.read()
    d.stop()
    d.shutdown()


def child_pipeline(model: str, runs: int, threads: int) -> dict:
    """bare / inproc / daemon / parent blocks of PIPE_BLOCK inputs in turn (the module docstring)."""
    from edge.backends.base import TensorSpec
    from edge.daemon.benchmark import sample_feeds
    work = Path(tempfile.mkdtemp(prefix="pipeline-", dir=os.environ.get("BENCH_WORKDIR")))
    bare = Bare(model, threads)
    (x,) = sample_feeds([TensorSpec(d["name"], np.dtype(d["dtype"]).name, tuple(d["shape"]))
                         for d in bare.ins], 1).values()
    procs, pids = {}, {"bare": [os.getpid()]}
    for side in SIDES:
        procs[side] = subprocess.Popen([sys.executable, SCRIPT, "--child", f"pipe-{side}", model, "--threads",
                                        str(threads), "--folder", str(work / side), "--out",
                                        str(work / f"{side}.jsonl")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)
        pids[side] = json.loads(procs[side].stdout.readline())["pids"]
    stages = {side: _stage(work / f"stage-{side}", x) for side in procs}
    for side in procs:                           # warm both sides (first files, page cache, threads)
        _pipe_block(work / side, stages[side])
    wall = {side: [] for side in pids}
    cpu = {side: 0 for side in pids}
    for _ in range(max(1, runs // PIPE_BLOCK)):
        for side in pids:
            c0 = _cpu_ns(pids[side])
            wall[side].append(_bare_block(bare) if side == "bare" else _pipe_block(work / side, stages[side]))
            cpu[side] += _cpu_ns(pids[side]) - c0
    for proc in procs.values():
        proc.stdin.close()
        proc.wait(30)
    n = PIPE_BLOCK * len(wall["bare"])
    out = {f"pipe_{k}_ms": float(np.median(v)) * 1e3 for k, v in wall.items()}
    out.update({f"pipe_{k}_cpu_ms": c / n / 1e6 for k, c in cpu.items()})
    out["pipe_overhead"] = float(np.median([dm / ip - 1 for dm, ip in zip(wall["daemon"], wall["inproc"])]))
    out["pipe_vs_bare"] = float(np.median([dm / b - 1 for dm, b in zip(wall["daemon"], wall["bare"])]))
    out["pipe_cpu_overhead"] = cpu["daemon"] / cpu["inproc"] - 1
    out["pipe_parent_overhead"] = float(np.median([pa / ip - 1 for pa, ip in zip(wall["parent"], wall["inproc"])]))
    out["pipe_parent_cpu_overhead"] = cpu["parent"] / cpu["inproc"] - 1
    out["pipe_parent_vs_lane_cpu"] = cpu["parent"] / cpu["daemon"] - 1
    return out


def _cpu_ns(pids) -> int:
    """CPU time of every thread of ``pids`` so far, in ns (/proc/PID/task/TID/schedstat: ns
    resolution, where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass                               # a thread that just ended
    return total


def _stage(folder: Path, x: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i in range(PIPE_BLOCK):
        np.save(folder / f"x{i:03d}.npy", x)
    return folder


def _pipe_block(inbox: Path, stage: Path) -> float:
    """Move a block of staged inputs into ``inbox``; seconds per input between the first and last
    result, polled every ms from here; then the inputs go back to the stage."""
    names = sorted(os.listdir(stage))
    done = inbox / "done"
    for n in names:
        os.rename(stage / n, inbox / n)
    first = last = None
    while True:
        count = len(os.listdir(done))
        now = time.perf_counter()
        if count and first is None:
            first = now
        if count >= len(names):
            last = now
            break
        time.sleep(0.001)
    for n in names:
        os.rename(done / n, stage / n)
    return (last - first) / (len(names) - 1)


def _bare_block(bare) -> float:
    for _ in range(SETTLE):
        bare()
    t0 = time.perf_counter()
    for _ in range(PIPE_BLOCK):
        bare()
    return (time.perf_counter() - t0) / PIPE_BLOCK
