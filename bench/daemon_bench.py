"""Daemon vs bare interpreter, side by side: overhead per inference, throughput, RSS, time to ready,
and the source -> sink path with a worker process.

    .venv/bin/python bench/daemon_bench.py [--models digits,mobilenet_v2] [--runs 300] [--threads 2]
                                           [--rounds 3] [--json out.json] [--workdir DIR] [--only pipeline]

The scenarios live in bench/daemon/, one module each, whose docstrings say how each is measured:

  common.py    the models (converted once to int8 .gpk), the bare interpreter, child processes
  latency.py   floor (pipe, thread hand-offs, a no-model echo), batch-1 latency (bare / sync /
               async / in-process worker, paired in rotating blocks), throughput (mb, w2, mb2), RSS
  ready.py     spawn -> READY=1, and spawn -> retained "online" status through a private mosquitto
  pipeline.py  folder -> model -> JSONL: bare / in-process loop / daemon with a worker lane /
               the same daemon on the parent's request path (what MQTT inputs take)
  report.py    the rows, the targets and the tables

Every scenario runs in a child process of its own (``--child KIND MODEL``), so memory figures are
clean. Ratios: overhead = daemon b1 ms / bare ms - 1 (target <= 5%; sync and async); mb/w2/mb2
ratio = daemon inf/s / bare inf/s (target >= 1); RSS delta = daemon (+ worker) - bare (target <= 40
MB); ready (< 2 s); pipe_overhead = daemon / inproc - 1 (target <= 5%).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # edge, core, tests.fixtures; bench/ itself is sys.path[0]

from daemon import common, latency, pipeline, ready, report  # noqa: E402 - after the path set-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,mobilenet_v2")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="time-to-ready attempts; the best is kept")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--workdir")
    ap.add_argument("--only", choices=("pipeline",), help="just the source -> sink comparison")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "MODEL"))
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ganglion-daemon-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_WORKDIR"] = str(workdir)          # the pipeline child's folders go there too
    load_before = os.getloadavg()
    rows = []
    only = args.only == "pipeline"
    broker = None if only else ready.start_broker(workdir)
    floor = {} if only else common.run_child("echo", Path("-"), args.runs, args.threads)
    for name in args.models.split(","):
        model = common.prepare(name, workdir)
        pipe = {k: round(v, 4) for k, v in common.run_child("pipeline", model, args.runs, args.threads).items()}
        pipe["pipe_target_met"] = pipe["pipe_overhead"] <= 0.05
        if only:
            rows.append({"model": name, "threads": args.threads, "runs": args.runs, **pipe})
            continue
        bare = common.run_child("bare", model, args.runs, args.threads)
        paired = common.run_child("daemon", model, args.runs, args.threads)
        ready_s = min(ready.ready_time(str(model), args.threads) for _ in range(args.rounds))
        online = min((ready.ready_online_time(str(model), args.threads, broker) for _ in range(args.rounds)),
                     default=None) if broker else None
        rows.append({**report.row(name, args, paired, bare, ready_s, online), **pipe})
    if broker is not None:
        broker.stop()
    summary = {"bench": "daemon", "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
               "floor": {k: round(v, 1) for k, v in floor.items()}, "results": rows}
    print(json.dumps(summary, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    report.table(rows, floor)


def child(args) -> None:
    """One scenario in this process (``--child KIND MODEL``); its figures as one JSON line."""
    kind, model = args.child
    if kind == "echo":
        print(json.dumps(latency.child_echo(args.runs)))
    elif kind == "pipe-inproc":                           # the sides of the pipeline, until stdin closes
        pipeline.child_inproc(model, args.folder, args.out, args.threads)
    elif kind in ("pipe-daemon", "pipe-parent"):
        pipeline.child_lane_daemon(model, args.folder, args.out, args.threads, lanes=kind == "pipe-daemon")
    else:
        fn = {"bare": latency.child_bare, "daemon": latency.child_daemon, "pipeline": pipeline.child_pipeline}[kind]
        print(json.dumps(fn(model, args.runs, args.threads)))


if __name__ == "__main__":
    main()
