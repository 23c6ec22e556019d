"""QDQ fidelity of both profiles, written from the converter's IR (``qdq/emit.py``), in one run.

    .venv/bin/python bench/qdq_graph_bench.py --zoo /work/zoo --models a,b [--num-calib N] [--json F]
    .venv/bin/python bench/qdq_graph_bench.py --model M.onnx --calib C.npz [--holdout H.npz] [--input-shape x=1,3,H,W]

Per model: load and calibrate once (min/max, as ``ganglion convert``), build the TFLite source of
the shared parameters once, then the QDQ model of each profile (tensorrt, onnxruntime) from the
same ranges, samples and parameters; each runs in onnxruntime's CPU execution provider
(TensorRT's is not installed here) against the float model on the holdout (the calibration data
when there is none). Columns: SQNR (dB) of the primary output (meta.json, else the first), node
count (Q/DQ included), build seconds. Before the fold.py graph was retired, this bench also built
the QDQ model from that graph, side by side (figures: docs/quantization.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import api, qdq, tflite  # noqa: E402
from converters.calibrate import collect_ranges  # noqa: E402
from converters.config import ConvertConfig  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402

def run(model_bytes: bytes, samples: list[dict], output: str) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return np.concatenate([session.run([output], {k: v for k, v in s.items() if k in names})[0].reshape(1, -1)
                           for s in samples])


def one(path: Path, calib: Path, holdout: Path | None, shapes: dict, primary: str | None, num_calib: int | None) -> dict:
    cfg = ConvertConfig(model=path, output=Path("unused.onnx"), calib=calib, num_calib=num_calib, progress=False,
                        input_shapes=tuple((k, tuple(v)) for k, v in shapes.items()))
    # as `ganglion convert` does: inputs that only steer an If and hold one value in the data are frozen
    _, model, _ = api.freeze_constant_controls(cfg, api.load_model(path, shapes or None), lambda m: None)
    state = api.stream_state(calib, model)       # a streaming model's recording: state fed back
    samples = api.load_samples(calib, model, limit=num_calib, state=state)
    held = api.load_samples(holdout, model, state=state) if holdout else samples
    ranges = collect_ranges(model, samples, progress=False)
    output = primary or model.graph.output[0].name
    source = tflite.build(model, ranges, tflite.TFLiteOptions(), samples=samples)
    reference = run(model.SerializeToString(), held, output)
    row = {"model": path.parent.name if path.name == "model.onnx" else path.stem, "output": output}
    for profile in sorted(qdq.PROFILES):
        t0 = time.perf_counter()
        q = qdq.build(model, ranges, profile=profile, samples=samples, tflite=source)
        seconds = time.perf_counter() - t0
        ops = [n.op_type for n in q.graph.node]
        row[profile] = {"sqnr_db": round(float(sqnr_db(reference, run(q.SerializeToString(), held, output))), 2),
                        "nodes": len(ops), "q": ops.count("QuantizeLinear"), "dq": ops.count("DequantizeLinear"),
                        "seconds": round(seconds, 1)}
    return row


def table(rows: list[dict]) -> str:
    cols = sorted(qdq.PROFILES)
    lines = ["| model | " + " | ".join(f"{c} dB (nodes)" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |")
            continue
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[c]['sqnr_db']:.2f} ({r[c]['nodes']})" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", type=Path)
    p.add_argument("--models", default="")
    p.add_argument("--model", type=Path)
    p.add_argument("--calib", type=Path)
    p.add_argument("--holdout", type=Path)
    p.add_argument("--input-shape", action="append", default=[])
    p.add_argument("--num-calib", type=int)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    jobs = []
    if args.model:
        shapes = {k: [int(d) for d in v.split(",")] for k, v in (s.split("=") for s in args.input_shape)}
        jobs.append((args.model, args.calib, args.holdout, shapes, None))
    for name in filter(None, args.models.split(",")):
        d = args.zoo / name
        meta = json.loads((d / "meta.json").read_text())
        shapes = {k: list(v) for k, v in (meta.get("input_shapes") or {}).items()}
        jobs.append((d / "model.onnx", d / "calib.npz", d / "holdout.npz", shapes, meta.get("primary_output")))
    rows = []
    for job in jobs:
        try:
            rows.append(one(*job, args.num_calib))
        except Exception as exc:  # one model's failure is one row, not the run
            rows.append({"model": str(job[0]), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
