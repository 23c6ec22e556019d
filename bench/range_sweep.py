"""Range-choice sweep: several ways of choosing activation ranges, from ONE calibration pass, each
built into int8 TFLite by the normal conversion and scored on the zoo's held-out data.

    .venv/bin/python bench/range_sweep.py --zoo /work/zoo --models ocr_det_dbnet,vit_small_ts
        [--strategies minmax,p99999,auto_in,auto_kfold] [--methods minmax,percentile:99.999] [--json F]

Per model (one child process each, so a crash costs one row): ``ganglion convert``'s own pipeline
(``converters.api.convert``, default flags plus meta.json's input shapes) with its calibration
step replaced by one ``auto`` observation pass (``calibrate.runner.observe``) from which every
strategy's ranges follow:

    minmax      each tensor's min/max (the default observer)
    p99999      percentile:99.999 on every tensor ``auto`` may choose for
    m:METHOD    METHOD (one of --methods) on every such tensor
    auto_in     ``select.choose`` scoring each method's ranges on the samples they came from
                (the ``auto`` of the previous session)
    auto_kfold  ``select.choose`` scoring held-out ranges (``observers.Auto.heldout_candidates``:
                fold k's samples get the ranges of the other fold), returning the full ranges

SQNR is ``bench/zoo_steps.py evaluate``'s: LiteRT int8 against the float ONNX on holdout.npz.
The scorer's own view (the chosen assignment's output SQNR on the scored samples) is printed too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = ("minmax", "p99999", "auto_in", "auto_kfold")


def strategy_ranges(model, samples, methods: tuple[str, ...], strategies) -> tuple[dict, dict]:
    """({strategy: ranges by tensor}, {strategy: scorer notes}) from one observation pass."""
    from converters.calibrate import observers, runner, select
    observers.Auto.METHODS = methods
    types = runner.value_types(model)
    inputs, produced = runner.float_tensor_names(model, types)
    found, kept, count = runner.observe(model, samples, "auto", types, inputs, produced, False)
    base = {n: obs.range() for n, obs in found.items() if obs.seen}
    data = runner.activations(model)
    choosable = [n for n in base if types.get(n) == 1 and n in data]
    full, heldout = select.candidate_tables({n: found[n] for n in choosable})
    scorer = select.Scorer(model, choosable, [f for f, _ in kept], [r for _, r in kept], runner.make_session)
    signal = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for _, refs in kept for r in refs)
    out, notes = {}, {"tests": {}}
    for label, table in (("in", full), ("kfold", heldout)):     # the uniform round, with its paired test
        noise = {m: scorer(table[m]) for m in methods}
        for m in methods[1:]:
            diff = noise[m] - noise[methods[0]]
            z = diff.mean() / max(diff.std(ddof=1) / np.sqrt(len(diff)), 1e-30)
            notes["tests"][f"{label}:{m}"] = {"gain_db": 10 * np.log10(noise[methods[0]].sum() / noise[m].sum()),
                                             "z": float(z)}
    for name in strategies:
        chosen = None
        if name == "minmax":
            ranges = dict(base)
        elif name.startswith("p"):
            ranges = {**base, **full[next(m for m in methods if m.startswith("percentile"))]}
        elif name.startswith("m:"):                    # one method of --methods on every tensor
            ranges = {**base, **full[name[2:]]}
        else:
            table = full if name == "auto_in" else heldout
            picked, chosen = select.choose(table, choosable, scorer, final=full,
                                           max_runs=select.budget(count, len(kept), len(full)))
            ranges = {**base, **picked}
        out[name] = ranges
        in_sample = scorer({n: ranges[n] for n in choosable}).sum()
        notes[name] = {"scored_sqnr_db": 10 * np.log10(signal / max(in_sample, 1e-30)),
                       "methods": None if chosen is None else
                       {m: sum(1 for v in chosen.values() if v == m) for m in methods}}
    return out, notes


def run_model(model_dir: Path, strategies, methods) -> dict:
    """One model, every strategy (in this process)."""
    import converters.api as api
    from bench.zoo_steps import evaluate
    from converters.calibrate.runner import CalibrationStats
    from converters.config import ConvertConfig
    meta = json.loads((model_dir / "meta.json").read_text())
    cache: dict = {}
    current = {"name": None}

    def fake_collect(model, samples, method="minmax", progress=True, means=True):
        samples = list(samples)
        if not cache:
            ranges, notes = strategy_ranges(model, samples, methods, strategies)
            cache.update(ranges=ranges, notes=notes)
        # no channel means: the TFLite build measures what bias correction needs itself
        return CalibrationStats(cache["ranges"][current["name"]], {}, len(samples))
    api.collect_stats = fake_collect
    result = {"model": model_dir.name, "sqnr": {}, "notes": None}
    primary = meta.get("primary_output")
    with tempfile.TemporaryDirectory() as tmp:
        for name in strategies:
            current["name"] = name
            out = Path(tmp) / f"{name}.tflite"
            cfg = ConvertConfig(model=model_dir / "model.onnx", output=out, calib=model_dir / "calib.npz",
                                input_shapes=tuple((k, tuple(v)) for k, v in meta.get("input_shapes", {}).items()),
                                progress=False)
            api.convert(cfg)
            sq = evaluate(model_dir, out, "tflite", 0)["sqnr_db"]
            result["sqnr"][name] = sq.get(primary, next(iter(sq.values())))
    result["notes"] = cache["notes"]
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", type=Path, default=Path("/work/zoo"))
    p.add_argument("--models", required=True)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--methods", default="minmax,percentile:99.999")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    strategies, methods = a.strategies.split(","), tuple(a.methods.split(","))
    if a.child:
        print("SWEEP " + json.dumps(run_model(a.zoo / a.models, strategies, methods), default=float))
        return
    rows = []
    for model in a.models.split(","):
        argv = [sys.executable, __file__, "--child", "--zoo", str(a.zoo), "--models", model,
                "--strategies", a.strategies, "--methods", a.methods]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in done.stdout.splitlines() if l.startswith("SWEEP ")), None)
        row = json.loads(line[6:]) if line else {"model": model, "error": done.stderr.strip().splitlines()[-1:]}
        rows.append(row)
        cells = "  ".join(f"{s} {row['sqnr'][s]:6.2f}" for s in strategies) if line else str(row["error"])
        print(f"{model:<32} {cells}", flush=True)
        if line:
            tests = row["notes"]["tests"]
            print(" " * 33 + "  ".join(f"{s}: scored {n['scored_sqnr_db']:.2f} {n['methods'] or ''}"
                                       for s, n in row["notes"].items() if s != "tests"), flush=True)
            print(" " * 33 + "  ".join(f"{k} {v['gain_db']:+.2f} dB z={v['z']:.1f}" for k, v in tests.items()),
                  flush=True)
        if a.json:
            a.json.write_text(json.dumps({"strategies": strategies, "methods": methods, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
