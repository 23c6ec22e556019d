"""Conversion time, peak RSS and output bytes of ONNX's big "light" models (VGG-19, ZFNet-512: fc6
weights of 103M / 75M elements), this tree against a base revision, interleaved in one run (issue 8).

    .venv/bin/python bench/light_bench.py [--base main] [--models vgg19 zfnet512] [--rounds 1] [--json out.json]

Each (tree, model, mode) converts in a fresh child with that tree's code first on the path, the
way tests/converters/api/test_light_models.py does (logits added as an output, one uniform [0, 1)
calibration sample for int8), and reports the conversion's wall and CPU seconds, the child's peak
RSS (model loading included) and the SHA-1 of the .tflite bytes: equal digests mean the two
trees wrote the same model bit for bit.
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

from convert_speed_bench import export_tree  # noqa: E402  (bench/ is not a package)

CHILD = """
import hashlib, json, os, resource, sys, time
import onnx
from converters import frontend
from tests.converters.ops import harness as H
name, quantize = sys.argv[1], sys.argv[2]
light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
m = frontend.load_model(os.path.join(light, f"light_{name}.onnx"))
softmax = [n for n in m.graph.node if n.op_type == "Softmax"]
if softmax:
    logits = softmax[-1].input[0]
    m.graph.output.append(next(v for v in m.graph.value_info if v.name == logits))
samples = H.samples_for(m, 1, low=0.0, high=1.0)
t0, c0 = time.perf_counter(), time.process_time()
res = H.convert(m, quantize, samples=samples if quantize == "int8" else None)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mb": round(len(res.flatbuffer) / 2**20, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "sha1": hashlib.sha1(res.flatbuffer).hexdigest()}))
"""


def run(tree: Path, name: str, quantize: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", CHILD, name, quantize], cwd=tree, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="big light models: this tree vs a base revision (module doc)")
    p.add_argument("--base", default="main", help="git revision to compare with")
    p.add_argument("--models", nargs="+", default=["vgg19", "zfnet512"])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ganglion-light-"))
    rows = []
    try:
        trees = {"base": export_tree(args.base, work / "base"), "this": ROOT}
        for name in args.models:
            for quantize in ("none", "int8"):
                runs = {t: [] for t in trees}
                for _ in range(args.rounds):
                    for tree_name, tree in trees.items():
                        runs[tree_name].append(run(tree, name, quantize))
                        print(name, quantize, tree_name, runs[tree_name][-1], file=sys.stderr, flush=True)
                rows.append({"model": name, "quantize": quantize, "runs": runs,
                             "median": {t: {k: statistics.median(r[k] for r in rs)
                                            for k in ("wall_s", "cpu_s", "peak_rss_mb")} for t, rs in runs.items()},
                             "same_bytes": len({r["sha1"] for rs in runs.values() for r in rs}) == 1})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {"base": args.base, "rounds": args.rounds, "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
           "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    print(table(doc))


def table(doc: dict) -> str:
    lines = [f"{'model':<9} {'mode':<5} {'wall s base/this':>17} {'CPU s base/this':>16} "
             f"{'peak MB base/this':>18} {'wall ratio':>10}  same bytes"]
    for r in doc["rows"]:
        b, t = r["median"]["base"], r["median"]["this"]
        lines.append(f"{r['model']:<9} {r['quantize']:<5} {b['wall_s']:>8.1f} /{t['wall_s']:>7.1f} "
                     f"{b['cpu_s']:>7.1f} /{t['cpu_s']:>7.1f} {b['peak_rss_mb']:>8.0f} /{t['peak_rss_mb']:>8.0f} "
                     f"{t['wall_s'] / b['wall_s']:>9.2f}x  {'yes' if r['same_bytes'] else 'NO'}")
    lines.append(f"(medians of {doc['rounds']} interleaved round(s); load average {doc['loadavg_1m']:.1f} "
                 f"on {doc['cpus']} CPUs)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
