"""Converter bench: everything side by side in one run, printed as JSON and as a table.

For each bench model (MobileNetV2-style 224, ResNet-tiny, the trained digits CNN):

  conversion   wall time and peak RSS of `ganglion convert MODEL --calib C -o M.gpk`, measured in a
               fresh child process (so imports and peak memory are the user's, not ours)
  size         int8 .tflite bytes / float .onnx bytes
  latency      median of N runs, same threads: our int8 TFLite (LiteRT) vs float TFLite (our
               converter, --quantize none) vs the float ONNX in onnxruntime
  fidelity     SQNR (dB) against the float ONNX in onnxruntime, on held-out inputs, of our int8
               TFLite and of onnxruntime.quantization.quantize_static (QDQ, per_channel=True,
               int8, MinMax, the same calibration samples)

    .venv/bin/python bench/convert_bench.py [--models mobilenet_v2,resnet_tiny,digits]
                                            [--runs 50] [--threads 2] [--calib 100] [--json out.json]

Targets (issue 2): MobileNetV2-224 converts in < 15 s and < 1 GB with 100 samples; int8 size
<= 0.27x float; int8 >= 1.8x faster than float TFLite; our SQNR >= quantize_static's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.verify.metrics import sqnr_db  # noqa: E402  (the one SQNR definition, after the path)


# --- bench models and data --------------------------------------------------------------------
def prepare(name: str, folder: Path, n_calib: int, n_eval: int) -> dict:
    """Write MODEL.onnx, calib.npz, eval.npz for a bench model; returns their paths."""
    from examples.models import mobilenet_v2, resnet_tiny
    if name == "digits":
        d = ROOT / "examples" / "digits"
        holdout = np.load(d / "holdout.npz")["input"][:n_eval]
        np.savez(folder / "digits_eval.npz", input=holdout)
        return {"model": d / "digits_cnn.onnx", "calib": d / "calib.npz", "eval": folder / "digits_eval.npz"}
    model = {"mobilenet_v2": mobilenet_v2.build, "resnet_tiny": resnet_tiny.build}[name]()
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    # Random-weight models: N(0, 1) inputs are what their BatchNorms were scaled for.
    for split, count in (("calib", n_calib), ("eval", n_eval)):
        np.savez(folder / f"{name}_{split}.npz", input=rng.normal(size=[count, *shape[1:]]).astype(np.float32))
    return {"model": path, "calib": folder / f"{name}_calib.npz", "eval": folder / f"{name}_eval.npz"}


def samples(path: Path) -> list[np.ndarray]:
    arr = np.load(path, allow_pickle=False)["input"]
    return [a[None] for a in arr]


# --- conversion, measured in a child process ---------------------------------------------------
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from edge.cli import main
code = main(sys.argv[1:])
seconds = time.perf_counter() - t0
# VmHWM is this process image's own peak RSS; ru_maxrss would also count the parent's pages
# mapped at fork time (Linux carries it across exec).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
# CPU seconds (all threads) say how much work it was, whatever else the machine was doing.
import resource
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "seconds": seconds, "peak_rss_mb": int(hwm) / 1024,
                  "cpu_s": use.ru_utime + use.ru_stime}))
"""


def timed_convert(argv: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"conversion failed: {' '.join(argv)}\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    if stats["code"] != 0:
        raise SystemExit(f"conversion failed ({stats['code']}): {' '.join(argv)}\n{proc.stderr}")
    return {"wall_s": wall, "in_process_s": stats["seconds"], "cpu_s": stats["cpu_s"],
            "peak_rss_mb": stats["peak_rss_mb"]}


# --- runners ----------------------------------------------------------------------------------
def litert_runner(model: bytes, threads: int):
    from core.litert import make_interpreter
    interp = make_interpreter(model, num_threads=threads)
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def run(x):
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out).copy()
    return run


def ort_runner(model: bytes | str, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def block_times(invokes: dict, runs: int, rounds: int = 5, warmup: int = 3,
                pause: float = 0.0) -> dict[str, list[float]]:
    """ms per call of each no-argument ``invokes[name]``, measured in blocks: each round runs every
    one ``runs/rounds`` times in a row (after ``warmup`` untimed calls). Blocks (not one-by-one
    interleaving) keep one runtime's spinning worker threads from slowing the next; rounds spread
    background load on a shared machine over all of them alike. ``pause`` (s) before each block
    lets the previous runtime's worker threads stop spinning (onnxruntime spins after each run)."""
    times: dict[str, list[float]] = {name: [] for name in invokes}
    per_block = max(1, runs // rounds)
    for _ in range(rounds):
        for name, invoke in invokes.items():
            if pause:
                time.sleep(pause)
            for _ in range(warmup):
                invoke()
            for _ in range(per_block):
                t0 = time.perf_counter()
                invoke()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(runners: dict, x, runs: int, rounds: int = 5, warmup: int = 3) -> dict[str, tuple]:
    """(median, min) latency per runner on input ``x`` (``block_times``, pausing between blocks)."""
    invokes = {name: (lambda run=run: run(x)) for name, run in runners.items()}
    times = block_times(invokes, runs, rounds, warmup, pause=0.05)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def ort_quantize_static(model: Path, calib: Path, out: Path, limit: int) -> Path:
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": s} for s in samples(calib)[:limit]])   # what --num-calib used

        def get_next(self):
            return next(self.it, None)
    # ORT's recommended pre-processing first (shape inference + graph optimisation, which folds
    # BatchNorm into Conv), so its quantizer gets its best shot.
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)   # shapes are static
    q.quantize_static(str(prepared), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax)
    return out


# --- one model --------------------------------------------------------------------------------
def bench_model(name: str, folder: Path, args) -> dict:
    from core import artifact
    paths = prepare(name, folder, args.calib, args.eval)
    gpk, ftfl = folder / f"{name}.gpk", folder / f"{name}_float.tflite"
    conversion = timed_convert(["convert", str(paths["model"]), "--calib", str(paths["calib"]),
                                "--num-calib", str(args.calib), "-q", "-o", str(gpk)])
    timed_convert(["convert", str(paths["model"]), "--quantize", "none", "-q", "-o", str(ftfl)])
    ours_qdq = folder / f"{name}_ours_qdq.onnx"
    timed_convert(["convert", str(paths["model"]), "--calib", str(paths["calib"]), "--num-calib", str(args.calib),
                   "-q", "-o", str(ours_qdq)])
    int8 = artifact.read(gpk).model_bytes("tflite")
    head = folder / f"{name}_head.tflite"
    timed_convert(["convert", str(paths["model"]), "--calib", str(paths["calib"]), "--num-calib", str(args.calib),
                   "--float-head", str(args.float_head), "-q", "-o", str(head)])
    ort_q = ort_quantize_static(paths["model"], paths["calib"], folder / f"{name}_ort_qdq.onnx", args.calib)
    runners = {"ours_int8_tflite": litert_runner(int8, args.threads),
               "ours_int8_float_head": litert_runner(head.read_bytes(), args.threads),
               "float_tflite": litert_runner(ftfl.read_bytes(), args.threads),
               "float_onnx_ort": ort_runner(str(paths["model"]), args.threads),
               "ort_qdq_int8": ort_runner(str(ort_q), args.threads),
               "ours_qdq_onnx_ort": ort_runner(str(ours_qdq), args.threads)}
    xs = samples(paths["eval"])
    outs = {k: np.concatenate([r(x) for x in xs]) for k, r in runners.items()}
    ref = outs["float_onnx_ort"]
    measured = median_ms(runners, xs[0], args.runs)
    latency = {k: med for k, (med, _) in measured.items()}
    fastest = {k: low for k, (_, low) in measured.items()}
    onnx_bytes = paths["model"].stat().st_size
    return {
        "model": name, "conversion": conversion,
        "size": {"float_onnx": onnx_bytes, "int8_tflite": len(int8), "ratio": len(int8) / onnx_bytes,
                 "gpk": gpk.stat().st_size, "gpk_ratio": gpk.stat().st_size / onnx_bytes},
        "latency_ms": latency,
        "latency_min_ms": fastest,
        "speedup_int8_vs_float_tflite": latency["float_tflite"] / latency["ours_int8_tflite"],
        "speedup_int8_vs_float_tflite_min": fastest["float_tflite"] / fastest["ours_int8_tflite"],
        "speedup_float_head_vs_float_tflite": latency["float_tflite"] / latency["ours_int8_float_head"],
        "speedup_int8_vs_float_onnx": latency["float_onnx_ort"] / latency["ours_int8_tflite"],
        "sqnr_db": {"ours_int8_tflite": sqnr_db(ref, outs["ours_int8_tflite"]),
                    "ort_quantize_static": sqnr_db(ref, outs["ort_qdq_int8"]),
                    "ours_qdq_onnx": sqnr_db(ref, outs["ours_qdq_onnx_ort"]),
                    "ours_int8_float_head": sqnr_db(ref, outs["ours_int8_float_head"]),
                    "float_tflite": sqnr_db(ref, outs["float_tflite"])},
        "top1_agreement": {k: float(np.mean(outs[k].argmax(-1) == ref.argmax(-1)))
                           for k in ("ours_int8_tflite", "ort_qdq_int8")},
        "transpose_ops_inside": count_inner_transposes(int8),
    }


def count_inner_transposes(flatbuffer: bytes) -> int:
    """TRANSPOSE ops inside the graph. The ONNX-signature I/O (NCHW in, NHWC inside) costs one at the
    input boundary (through its QUANTIZE); those touching graph inputs/outputs are not counted."""
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    count = 0
    for g in m.subgraphs:
        boundary = set(g.inputs) | set(g.outputs)
        producers = {int(t): op for op in g.operators for t in op.outputs}
        for op in g.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.TRANSPOSE:
                continue
            src = int(op.inputs[0])
            feeder = producers.get(src)
            from_input = src in boundary or (feeder is not None and codes[feeder.opcodeIndex]
                                             == schema.BuiltinOperator.QUANTIZE and int(feeder.inputs[0]) in boundary)
            if not from_input and not (set(int(t) for t in op.outputs) & boundary):
                count += 1
    return count


# --- report -----------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    rows = [("model", "convert s", "cpu s", "peak MB", "tflite x", "gpk x", "int8 ms", "f32 tfl ms", "f32 ort ms",
             "speedup", "(min)", "head x", "SQNR ours", "SQNR ort", "SQNR our QDQ", "SQNR head",
             "inner TRANSPOSE")]
    for r in results:
        lat, sq = r["latency_ms"], r["sqnr_db"]
        rows.append((r["model"], f"{r['conversion']['wall_s']:.1f}", f"{r['conversion']['cpu_s']:.1f}",
                     f"{r['conversion']['peak_rss_mb']:.0f}",
                     f"{r['size']['ratio']:.3f}", f"{r['size']['gpk_ratio']:.3f}",
                     f"{lat['ours_int8_tflite']:.3f}", f"{lat['float_tflite']:.3f}",
                     f"{lat['float_onnx_ort']:.3f}", f"{r['speedup_int8_vs_float_tflite']:.2f}x",
                     f"{r['speedup_int8_vs_float_tflite_min']:.2f}x",
                     f"{r['speedup_float_head_vs_float_tflite']:.2f}x",
                     f"{sq['ours_int8_tflite']:.1f}", f"{sq['ort_quantize_static']:.1f}",
                     f"{sq['ours_qdq_onnx']:.1f}", f"{sq['ours_int8_float_head']:.1f}",
                     str(r["transpose_ops_inside"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Ganglion converter bench (see module docstring).")
    p.add_argument("--models", default="mobilenet_v2,resnet_tiny,digits")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib", type=int, default=100)
    p.add_argument("--float-head", type=int, default=3, help="also bench --float-head N (x86 XNNPACK stem)")
    p.add_argument("--eval", type=int, default=100)     # SQNR gaps of tenths of a dB need ~100 samples
    p.add_argument("--json", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    results, failed = [], []
    with tempfile.TemporaryDirectory(prefix="ganglion-bench-") as tmp:
        for m in args.models.split(","):
            try:
                results.append(bench_model(m, Path(tmp), args))
            except Exception as exc:    # one broken model must not hide the others' numbers
                failed.append({"model": m, "error": f"{type(exc).__name__}: {exc}"})
    # The load average says how much the (shared) machine disturbed the latency columns.
    doc = {"threads": args.threads, "runs": args.runs, "calib_samples": args.calib,
           "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "results": results, "failed": failed}
    print(json.dumps(doc, indent=2))
    print()
    print(table(results))
    print(f"(load average {doc['loadavg_1m']:.2f} on {doc['cpus']} CPUs; latency columns are medians, "
          "'(min)' is the speedup of the fastest runs)")
    for f in failed:
        print(f"FAILED {f['model']}: {f['error'][:300]}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
