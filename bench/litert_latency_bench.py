"""Latency of several .tflite files in the same LiteRT interpreter, interleaved, as ratios.

    .venv/bin/python bench/litert_latency_bench.py ref=/tmp/o2t.tflite ours=/tmp/ours.tflite \
        [--threads 2] [--rounds 8] [--runs 50] [--json out.json]

One process loads every model (XNNPACK on, as on a device, ``--threads`` threads), feeds each the
same random input (float inputs uniform in [-1, 1], integer inputs their full range; layouts may
differ, values do not matter to the time), and then alternates at the finest grain: each of
``--rounds`` x ``--runs`` steps invokes every model once, in an order that rotates every step, so
a load spike on this shared machine falls on all of them. Three ratios to the first model: of the
medians, of the means of the fastest tenth of the runs (the ones the machine's other tenants left
alone: the closest to an idle device), and the median over steps of the paired per-step ratio.
Listing the first model twice shows the noise floor of the run.

``--clock cpu`` times each invocation by the CPU time of this process (``time.process_time``)
instead of the wall clock: on a machine shared with other jobs, the time a model waits for a core
is not counted, only the work it does. Use it with ``--threads 1`` (the work runs on the calling
thread; with more threads the pool's spinning waits count as CPU time too).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.litert import make_interpreter  # noqa: E402  (after the path: the project's one loader)


def random_inputs(interp, rng) -> list[tuple[int, np.ndarray]]:
    feeds = []
    for detail in interp.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = tuple(detail["shape"])
        if dtype.kind == "f":
            value = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        elif dtype.kind == "b":                      # a mask input (a transformer's padding mask)
            value = rng.integers(0, 2, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        feeds.append((detail["index"], value))
    return feeds


def load(path: Path, threads: int):
    """An interpreter of ``path`` and how many delegate partitions it runs (LiteRT lists a
    DELEGATE node per partition; one means XNNPACK took one contiguous run of ops, not that it
    took all of them: its "Replacing N out of M nodes" log is not printed by this build)."""
    interp = make_interpreter(path.read_bytes(), num_threads=threads)
    ops = interp._get_ops_details()      # noqa: SLF001 (LiteRT's only view of the nodes)
    return interp, {"ops": sum(op["op_name"] != "DELEGATE" for op in ops),
                    "delegate_partitions": sum(op["op_name"] == "DELEGATE" for op in ops)}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(models: dict[str, Path], threads: int, rounds: int, runs: int, warmup: int = 10,
            clock: str = "wall") -> dict:
    """Each timed step invokes every model once, in an order that rotates each step, so the
    models of one step see the same load; a ratio is the median over steps of the paired ratio."""
    now = CLOCKS[clock]
    rng = np.random.default_rng(0)
    loaded = {name: load(path, threads) for name, path in models.items()}
    interps = {name: interp for name, (interp, _) in loaded.items()}
    for name, interp in interps.items():
        for index, value in random_inputs(interp, rng):
            interp.set_tensor(index, value)
        for _ in range(warmup):
            interp.invoke()
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for step in range(rounds * runs):
        k = step % len(names)
        for name in names[k:] + names[:k]:
            t0 = now()
            interps[name].invoke()
            times[name].append((now() - t0) * 1e3)
    result = {}
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[names[0]])]
        fastest = sorted(times[name])[:max(1, len(times[name]) // 10)]
        result[name] = {"path": str(models[name]), "bytes": models[name].stat().st_size,
                        "median_ms": statistics.median(times[name]), "ratio": statistics.median(ratios),
                        # the fastest tenth: the runs the other tenants of a shared machine left alone
                        "fast_decile_ms": statistics.mean(fastest),
                        "ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [1.0] * 3,
                        **loaded[name][1]}
    for name in names:
        result[name]["fast_decile_ratio"] = result[name]["fast_decile_ms"] / result[names[0]]["fast_decile_ms"]
        result[name]["median_ratio"] = result[name]["median_ms"] / result[names[0]]["median_ms"]
    return result


def table(result: dict) -> str:
    lines = [f"{'model':<14} {'median ms':>10} {'ratio':>7} {'fast 10% ms':>12} {'ratio':>7} {'paired ratio':>13} "
             f"{'quartiles':>17} {'ops':>5} {'XNNPACK partitions':>19}"]
    for name, r in result.items():
        q = r["ratio_quartiles"]
        lines.append(f"{name:<14} {r['median_ms']:>10.3f} {r['median_ratio']:>7.3f} {r['fast_decile_ms']:>12.3f} "
                     f"{r['fast_decile_ratio']:>7.3f} {r['ratio']:>13.3f} {q[0]:>8.3f}..{q[2]:<7.3f} {r['ops']:>5} "
                     f"{r['delegate_partitions']:>19}")
    return "\n".join(lines)


def timing_options(p: argparse.ArgumentParser, runs: int = 50) -> None:
    """The options of ``measure`` (shared with edge_transpose_bench.py), and --json."""
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--runs", type=int, default=runs)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (litert_latency_bench.py's doc)")
    p.add_argument("--json", type=Path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="interleaved LiteRT latency of .tflite files (module doc)")
    p.add_argument("models", nargs="+", help="NAME=PATH; the first is the reference of the ratios")
    timing_options(p)
    args = p.parse_args(argv)
    models = dict((spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in args.models)
    result = measure(models, args.threads, args.rounds, args.runs, clock=args.clock)
    doc = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "clock": args.clock,
           "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "models": result}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    print(table(result))
    print(f"{args.rounds} rounds x {args.runs} runs each, {args.threads} threads, {args.clock} clock; "
          f"load average {doc['loadavg_1m']:.1f} on {doc['cpus']} CPUs")


if __name__ == "__main__":
    main()
