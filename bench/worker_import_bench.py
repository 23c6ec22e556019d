"""What a model worker process imports before it serves: with a board named and without, side by side.

    .venv/bin/python bench/worker_import_bench.py [--rounds 3] [--board x86_64-generic] [--json out.json]

Each round starts two daemons in turn (each in a child process of its own), one for the tiny dense
.tflite of the device tests with no board and one with ``--board``, and records the import log
(``PYTHONPROFILEIMPORTTIME``) of the worker process the daemon spawns: the total import time (sum
of every module's own time), the number of modules, and the modules of note -- ``pydantic`` and
``boards`` (the board schema: a worker should never parse config), ``numpy`` (a worker needs
it). The medians over the rounds are compared:
board_extra_ms = with board - without (target: ~0, the parent hands the worker its board's
runtime choices as plain values in ``WorkerSpec``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")
NOTE = ("pydantic", "boards", "core.config", "numpy")


def child(model: str, board: str | None) -> None:
    """Start a daemon whose worker logs its imports to this process's stderr, wait until it is
    ready, stop. The daemon's modules are imported here, not at the top: the spawned worker
    re-imports this file as ``__mp_main__`` and must not inherit them that way."""
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    from multiprocessing import resource_tracker
    table = {"model": {"path": model}, "metrics": {"interval_s": 3600}}
    if board:
        table["board"] = board
    cfg = from_dict(table).require_model()
    resource_tracker.ensure_running()          # before the flag: its process would log imports too
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"       # read at start-up: the worker only
    d = Daemon(cfg, outbox=MemoryOutbox()).start()
    d.stop()
    d.shutdown()


def parse(log: str) -> dict:
    """The import log of one process -> total ms, module count, cumulative ms of the modules of note."""
    total, count, note = 0, 0, {}
    for line in log.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        own, cumulative, name = int(m[1]), int(m[2]), m[4]
        total += own
        count += 1
        if name in NOTE:
            note[name] = round(max(note.get(name, 0), cumulative / 1e3), 1)
    return {"total_ms": round(total / 1e3, 1), "modules": count, **{f"{k}_ms": note.get(k) for k in NOTE}}


def measure(model: str, board: str | None) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", model] + (["--child-board", board] if board else []),
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"worker child failed:\n{res.stderr[-3000:]}")
    return parse(res.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--board", default="x86_64-generic")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--child-board", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.child_board)
        return
    from tests.edge.models import dense_tflite          # test-only helper: the tiny real model
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "dense.tflite"
        model.write_bytes(dense_tflite())
        runs = {"no_board": [], "board": []}
        for _ in range(args.rounds):                     # interleaved: both sides see the same load
            runs["no_board"].append(measure(str(model), None))
            runs["board"].append(measure(str(model), args.board))
    med = {side: {k: _median([r[k] for r in rs]) for k in rs[0]} for side, rs in runs.items()}
    report = {"bench": "worker_import", "board": args.board, "rounds": args.rounds, "median": med,
              "board_extra_ms": round(med["board"]["total_ms"] - med["no_board"]["total_ms"], 1),
              "board_extra_modules": med["board"]["modules"] - med["no_board"]["modules"], "runs": runs}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    cols = ["total_ms", "modules", *(f"{k}_ms" for k in NOTE)]
    print("\nworker process imports (median of rounds; module columns: cumulative ms, - = not imported)")
    print(f"{'side':>10}" + "".join(f"{c:>18}" for c in cols))
    for side, row in med.items():
        print(f"{side:>10}" + "".join(f"{'-' if row[c] is None else row[c]:>18}" for c in cols))
    print(f"board named: +{report['board_extra_ms']} ms, +{report['board_extra_modules']} modules")


def _median(values: list):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


if __name__ == "__main__":
    main()
