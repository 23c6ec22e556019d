"""Conversion time and memory, this tree against a base revision, interleaved in one run.

    .venv/bin/python bench/convert_speed_bench.py --model-dir /work/zoo/yolov8n_640_ts \
        [--calib /tmp/calib100.npz] [--base main] [--this HEAD] [--rounds 2] [--json out.json]

The base revision (and ``--this``, default: the working tree) is exported with `git archive` into a
temporary folder, and both trees convert
the same model with the same calibration file, alternating (base, this, base, this, ...), each
`ganglion convert` in a child (zoo_bench.convert: wall time, CPU time of all threads, peak RSS read
by the child itself). On a shared machine wall time follows the load; CPU time and peak RSS are the
steadier figures, and the ratios come from rounds run side by side. Each output's SQNR on the
folder's holdout.npz (zoo_steps evaluate) shows that the two trees quantize alike.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import zoo_bench  # noqa: E402  (bench/ is not a package: the one convert-in-a-child helper)


def export_tree(rev: str, into: Path) -> Path:
    """The files of ``rev`` of this repository under ``into`` (no .git, no venv)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def convert(tree: Path, model_dir: Path, calib: Path, out: Path, timeout: float) -> dict:
    """zoo_bench.convert with ``tree``'s code first on the path and ``calib`` as the data."""
    staged = out.parent / f"{out.stem}-in"
    staged.mkdir(exist_ok=True)
    for name in ("model.onnx", "holdout.npz", "meta.json"):
        if not (staged / name).exists():
            (staged / name).symlink_to(model_dir / name)
    if not (staged / "calib.npz").exists():
        (staged / "calib.npz").symlink_to(calib)
    meta = json.loads((model_dir / "meta.json").read_text())
    old = zoo_bench.ROOT
    zoo_bench.ROOT = tree          # run_child puts ROOT on PYTHONPATH and runs there
    try:
        return zoo_bench.convert(staged, meta, out, timeout, None)
    finally:
        zoo_bench.ROOT = old


def sqnr(model_dir: Path, tflite: Path, work: Path) -> dict:
    out = work / f"{tflite.stem}.eval.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "zoo_steps.py"), "evaluate", str(model_dir), str(tflite),
                    "tflite", str(out)], check=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.read_text())["sqnr_db"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="conversion speed: this tree vs a base revision (module doc)")
    p.add_argument("--model-dir", type=Path, required=True, help="a zoo folder (model.onnx, holdout.npz, meta.json)")
    p.add_argument("--calib", type=Path, help="calibration file (default: the folder's calib.npz)")
    p.add_argument("--base", default="main", help="git revision to compare with")
    p.add_argument("--this", help="git revision to measure (default: the working tree, as it is during the run)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    calib = (args.calib or args.model_dir / "calib.npz").resolve()
    work = Path(tempfile.mkdtemp(prefix="ganglion-speed-"))
    try:
        trees = {"base": export_tree(args.base, work / "base"),
                 "this": export_tree(args.this, work / "this") if args.this else ROOT}
        runs = {name: [] for name in trees}
        for k in range(args.rounds):
            for name, tree in trees.items():
                res = convert(tree, args.model_dir, calib, work / f"{name}{k}.tflite", args.timeout)
                if not res["ok"]:
                    raise SystemExit(f"{name} failed: {res.get('error')}")
                runs[name].append(res)
                print(f"round {k} {name}: {res['wall_s']} s wall, {res['cpu_s']} s CPU, {res['peak_rss_mb']} MB",
                      file=sys.stderr, flush=True)
        doc = {"model_dir": str(args.model_dir), "calib": str(calib), "base": args.base, "this": args.this or "worktree",
           "rounds": args.rounds,
               "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "runs": runs,
               "sqnr_db": {name: sqnr(args.model_dir, work / f"{name}0.tflite", work) for name in trees},
               "same_bytes": (work / "base0.tflite").read_bytes() == (work / "this0.tflite").read_bytes()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["median"] = {name: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "cpu_s", "peak_rss_mb")}
                     for name, rs in runs.items()}
    doc["ratio_this_to_base"] = {key: round(doc["median"]["this"][key] / doc["median"]["base"][key], 3)
                                 for key in ("wall_s", "cpu_s", "peak_rss_mb")}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    print(table(doc))


def table(doc: dict) -> str:
    lines = [f"{'tree':<6} {'wall s':>8} {'cpu s':>8} {'peak MB':>8}  SQNR dB"]
    for name, med in doc["median"].items():
        sq = ", ".join(f"{k} {v:.2f}" for k, v in doc["sqnr_db"][name].items())
        lines.append(f"{name:<6} {med['wall_s']:>8.1f} {med['cpu_s']:>8.1f} {med['peak_rss_mb']:>8.0f}  {sq}")
    lines.append(f"outputs byte-identical: {doc['same_bytes']}")
    r = doc["ratio_this_to_base"]
    lines.append(f"this/base: wall {r['wall_s']:.2f}x, CPU {r['cpu_s']:.2f}x, peak RSS {r['peak_rss_mb']:.2f}x "
                 f"(medians of {doc['rounds']} interleaved rounds; load average {doc['loadavg_1m']:.1f} "
                 f"on {doc['cpus']} CPUs)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
