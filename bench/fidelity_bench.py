"""Fidelity bench: our int8 TFLite vs ONNX Runtime's quantize_static on real architectures.

The models come from ``bench/fidelity/export.py`` (torchvision, seeded weights, BatchNorm
re-estimated on data; MODEL.onnx, MODEL_calib.npz, MODEL_eval.npz in ``--dir``). Per model:

  ours       converters.calibrate.collect_ranges(observer) + converters.tflite.build(samples=calib),
             run in LiteRT; one column per ``--observers`` entry (default: the converter's default)
  ort        quant_pre_process, then quantize_static (QDQ, per_channel=True, int8 activations and
             weights) with each of MinMax / Entropy / Percentile on the same calibration samples,
             run in onnxruntime; "ort best" is the best of them
  SQNR       dB of each int8 model's output against the float ONNX in onnxruntime, over the
             held-out samples (converters.verify.metrics.sqnr_db over all of them at once)

ORT's figures do not depend on our code, so they are cached (``--ort-cache``, keyed by the
model file's size and mtime, the method and the sample count). Printed as a table and JSON.

    .venv/bin/python bench/fidelity_bench.py --dir /work/fid [--models vit_small,convnext_tiny]
        [--observers minmax,auto] [--ort MinMax,Entropy,Percentile] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.verify.metrics import sqnr_db  # noqa: E402  (after the path)

MODELS = ("convnext_tiny", "vit_small", "mobilenet_v3_small", "efficientnet_b0")
ORT_METHODS = ("MinMax", "Entropy", "Percentile")


def load_npz(path: Path) -> list[dict[str, np.ndarray]]:
    data = np.load(path)
    names = list(data.files)
    return [{n: data[n][i:i + 1] for n in names} for i in range(len(data[names[0]]))]


def ort_outputs(model: bytes | str, samples: list[dict]) -> np.ndarray:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, s)[0] for s in samples])


def litert_outputs(flatbuffer: bytes, samples: list[dict]) -> np.ndarray:
    from core.litert import make_interpreter
    interp = make_interpreter(flatbuffer, num_threads=2)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for s in samples:
        interp.set_tensor(inp["index"], next(iter(s.values())).astype(np.float32))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def ours(path: Path, calib: list[dict], holdout: list[dict], observer: str) -> tuple[np.ndarray, dict]:
    from converters import frontend, tflite
    from converters.calibrate import collect_ranges
    start = time.perf_counter()
    model = frontend.load_model(path)
    ranges = collect_ranges(model, calib, method=observer, progress=False)
    result = tflite.build(model, ranges, tflite.TFLiteOptions(), samples=calib)
    seconds = time.perf_counter() - start
    return litert_outputs(result.flatbuffer, holdout), {"convert_s": round(seconds, 1),
                                                        "ops": len(result.ops)}


def ort_quantized(path: Path, calib: list[dict], method: str, folder: Path) -> bytes:
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = folder / f"{path.stem}_pre.onnx"
    if not prepared.exists():
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    it = iter(calib)

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(it, None)
    out = folder / f"{path.stem}_{method}.onnx"
    q.quantize_static(str(prepared), str(out), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QInt8,
                      weight_type=q.QuantType.QInt8, calibrate_method=getattr(q.CalibrationMethod, method))
    return out.read_bytes()


def bench_model(name: str, args, cache: dict) -> dict:
    path = args.dir / f"{name}.onnx"
    calib = load_npz(args.dir / f"{name}_calib.npz")[:args.calib]
    holdout = load_npz(args.dir / f"{name}_eval.npz")
    ref = ort_outputs(str(path), holdout)
    row: dict = {"model": name, "calib": len(calib), "holdout": len(holdout), "ours": {}, "ort": {}}
    for observer in args.observers:
        out, info = ours(path, calib, holdout, observer)
        row["ours"][observer] = {"sqnr_db": round(sqnr_db(ref, out), 2), **info}
        print(f"  {name} ours {observer}: {row['ours'][observer]}", file=sys.stderr)
    stat = path.stat()
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.ort:
            key = f"{name}|{stat.st_size}|{stat.st_mtime_ns}|{method}|{len(calib)}|{len(holdout)}"
            if key not in cache:
                qmodel = ort_quantized(path, calib, method, Path(tmp))
                cache[key] = round(sqnr_db(ref, ort_outputs(qmodel, holdout)), 2)
            row["ort"][method] = cache[key]
            print(f"  {name} ort {method}: {cache[key]}", file=sys.stderr)
    row["ort_best"] = max(row["ort"].values()) if row["ort"] else None
    return row


def table(rows: list[dict], observers: list[str], methods: list[str]) -> str:
    head = ["model", *(f"ours {o}" for o in observers), *(f"ort {m}" for m in methods), "ort best",
            "gap dB"]
    lines = [head]
    for r in rows:
        mine = [r["ours"][o]["sqnr_db"] for o in observers]
        best = r["ort_best"]
        gap = f"{mine[0] - best:+.1f}" if best is not None and mine else "-"
        lines.append([r["model"], *(f"{v:.1f}" for v in mine), *(f"{r['ort'][m]:.1f}" for m in methods),
                      "-" if best is None else f"{best:.1f}", gap])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/work/fid"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--observers", default="default",
                    help="comma list of --observer values for our converter ('default': its default)")
    ap.add_argument("--ort", default=",".join(ORT_METHODS), help="ORT calibration methods ('' for none)")
    ap.add_argument("--calib", type=int, default=100, help="at most this many calibration samples")
    ap.add_argument("--ort-cache", type=Path, default=Path("/work/fid/ort_cache.json"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from converters.config import ConvertConfig
    default = ConvertConfig.__dataclass_fields__["observer"].default
    args.observers = [default if o == "default" else o for o in args.observers.split(",")]
    args.ort = [m for m in args.ort.split(",") if m]
    cache = json.loads(args.ort_cache.read_text()) if args.ort_cache.exists() else {}
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, args, cache))
        args.ort_cache.write_text(json.dumps(cache, indent=1))
    report = {"default_observer": default, "rows": rows}
    print(json.dumps(report, indent=1))
    print(table(rows, args.observers, args.ort))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
