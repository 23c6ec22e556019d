"""Streaming models run closed-loop, as a device runs them: candidates side by side on a zoo folder.

    .venv/bin/python bench/stream_loop.py /work/zoo3/silero_vad_openvino A.tflite B.onnx ... [--json F]

For each candidate (a .tflite in LiteRT, an ONNX model in onnxruntime) against the folder's
model.onnx, on two sequences: the holdout (clip starts from holdout_labels.json) and calls
``--skip``.. of calib.npz (the calls convert's default 100 calibration samples leave unused;
restarts where the recorded state is all zero). Figures of the primary output (meta.json's
`vad_stream` metric): per-call SQNR (the recorded float state fed in), closed-loop SQNR and
speech/non-speech agreement with float (each model fed its own state), and the agreement over
both sequences pooled (500 calls on the zoo3 VADs: a step of 0.002, where the holdout alone
moves in steps of 0.005 and swings with one clip).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.zoo_steps import OnnxRunner, TFLiteRunner, load_samples, stream  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from core.litert import make_interpreter  # noqa: E402


def runner_for(path: Path, ref_model: onnx.ModelProto, ref: OnnxRunner):
    if path.suffix != ".tflite":
        return OnnxRunner(onnx.load(str(path)))
    inputs = [i.name for i in ref_model.graph.input]
    taken = {d["name"] for d in make_interpreter(path.read_bytes()).get_input_details()}
    inputs = [n for n in inputs if n in taken] if len(taken) < len(inputs) else inputs
    return TFLiteRunner(path.read_bytes(), inputs, ref.output_names, num_threads=2)


def sequences(folder: Path, state_in: str, skip: int) -> dict:
    """name -> (samples, clip starts)."""
    labels = json.loads((folder / "holdout_labels.json").read_text())
    calib = load_samples(folder / "calib.npz")[skip:]
    return {"holdout": (load_samples(folder / "holdout.npz"), set(labels.get("clip_starts", [0]))),
            "calib_unused": (calib, {0} | {i for i, f in enumerate(calib) if not np.any(f[state_in])})}


def measure(folder: Path, candidates: list[Path], skip: int) -> list[dict]:
    metric = json.loads((folder / "meta.json").read_text())["metric"]
    (_, state_in), = metric["state"].items()
    ref_model = onnx.load(str(folder / "model.onnx"))
    ref = OnnxRunner(ref_model)
    seqs = sequences(folder, state_in, skip)
    refs = {name: np.array(stream(ref, samples, starts, metric)) for name, (samples, starts) in seqs.items()}
    out = metric["output"]
    rows = []
    for path in candidates:
        cand = runner_for(path, ref_model, ref)
        holdout = seqs["holdout"][0]
        row = {"candidate": str(path), "per_call_sqnr_db": sqnr_db(
            np.array([np.ravel(ref.run(f)[out])[0] for f in holdout]),
            np.array([np.ravel(cand.run(f)[out])[0] for f in holdout]))}
        agree = []
        for name, (samples, starts) in seqs.items():
            got = np.array(stream(cand, samples, starts, metric))
            same = (refs[name] >= metric["threshold"]) == (got >= metric["threshold"])
            agree.append(same)
            row[name] = {"closed_loop_sqnr_db": sqnr_db(refs[name], got), "agreement": float(same.mean()),
                         "calls": len(samples)}
        row["pooled_agreement"] = float(np.concatenate(agree).mean())
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("candidates", type=Path, nargs="+")
    p.add_argument("--skip", type=int, default=100, help="calib.npz calls convert used (default 100)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = measure(args.folder, args.candidates, args.skip)
    print(f"{'candidate':40s} {'per-call':>9s} {'hold CL':>8s} {'agree':>6s} {'calib CL':>9s} {'agree':>6s} {'pooled':>7s}")
    for r in rows:
        h, c = r["holdout"], r["calib_unused"]
        print(f"{Path(r['candidate']).name:40s} {r['per_call_sqnr_db']:9.2f} {h['closed_loop_sqnr_db']:8.2f} "
              f"{h['agreement']:6.3f} {c['closed_loop_sqnr_db']:9.2f} {c['agreement']:6.3f} {r['pooled_agreement']:7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"folder": str(args.folder), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
