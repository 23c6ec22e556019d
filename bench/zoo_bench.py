"""Zoo bench: does `ganglion convert` take the models users bring, by default, and how does its int8
compare with ONNX Runtime's quantizer? One row per model folder of the zoo (bench/zoo/export.py).

    .venv/bin/python bench/zoo_bench.py [--zoo /work/zoo] [--models a,b] [--timeout 1800]
                                        [--num-calib N] [--runs 0] [--no-ort] [--no-qdq] [--json out.json]

Per model, every step in a child process (a crash or a hang costs one cell, never the run), all
steps of a model sharing one --timeout budget:

    convert     `ganglion convert model.onnx --calib calib.npz [--input-shape ..] -q -o x.tflite`, the
                default flags plus what meta.json asks (pins of dynamic dims beyond the batch): exit
                code, the first error line (typed `error[code]` or a raw crash's last line), wall
                time, CPU time (user + system, all threads: steadier than wall time on a shared
                machine) and the child's peak RSS (VmHWM, read by the child itself on exit)
    SQNR ours   int8 TFLite in LiteRT (XNNPACK, 2 threads) against model.onnx in onnxruntime on
                holdout.npz, per output; the table shows meta's primary output
    SQNR ORT    onnxruntime quantize_static after quant_pre_process, QDQ, per-channel, int8, each of
                MinMax / Entropy / Percentile on the same calibration samples; the best one is shown
    SQNR QDQ    our `--target qdq` model (default tensorrt profile) in onnxruntime
    gap         SQNR ours - SQNR ORT best (issue 8's bar: >= -0.5 dB)

A folder whose meta.json has a `metric` (the third-party zoo, bench/zoo/third_party.py) also gets
task figures per candidate (bench/zoo_tasks.py: OCR text CER and exact match, classification
agreement, box F1 at IoU 0.5 after each package's decode + NMS, VAD decisions of a closed-loop
stream), printed as a second table: float, ours, ours QDQ, the best ORT method on that figure.

An already-quantized model (meta "prequantized") is its own reference and gets no ORT column; a model
meta marks `expect: refuse` passes when it is refused with a typed error (not a crash).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORT_METHODS = ("MinMax", "Entropy", "Percentile")

# The CLI in a child that reports its own peak RSS: ru_maxrss of a child also counts the parent's
# pages at fork time (Linux carries the high-water mark across exec); VmHWM is the child's own.
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from edge.cli import main
try:
    code = main(sys.argv[1:])
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    use = resource.getrusage(resource.RUSAGE_SELF)
    sys.stdout.write("\\nZOO-STATS " + json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": int(hwm) / 1024,
                                                    "cpu_s": use.ru_utime + use.ru_stime}) + "\\n")
sys.exit(code)
"""


# --- children -------------------------------------------------------------------------------------
def run_child(argv: list[str], timeout: float) -> dict:
    """Run argv in its own process group; kill the group on timeout. Returns code/out/err/seconds."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return {"code": code, "out": out, "err": err, "seconds": time.perf_counter() - start}


def first_error(stderr: str) -> str:
    """The line that says why: a typed `error[code]: ...`, else the last line of a traceback."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    typed = [i for i, l in enumerate(lines) if l.startswith("error[")]
    if typed:       # the message and the lines that detail it ("N node(s) cannot be converted:" ...)
        return " | ".join(lines[typed[0]:typed[0] + 3])[:400]
    if any(l.startswith("Traceback") for l in lines):
        return "crash: " + lines[-1][:290]
    return lines[-1][:300] if lines else ""


def convert(model_dir: Path, meta: dict, out: Path, timeout: float, num_calib: int | None, target=()) -> dict:
    argv = [sys.executable, "-c", CHILD, "convert", str(model_dir / "model.onnx"),
            "--calib", str(model_dir / "calib.npz"), "-q", "-o", str(out), *target]
    for name, dims in meta.get("input_shapes", {}).items():
        argv += ["--input-shape", f"{name}={','.join(str(d) for d in dims)}"]
    argv += [str(f) for f in meta.get("convert_flags", [])]
    if num_calib:
        argv += ["--num-calib", str(num_calib)]
    child = run_child(argv, timeout)
    stats = next((json.loads(l[10:]) for l in child["out"].splitlines() if l.startswith("ZOO-STATS ")), {})
    ok = child["code"] == 0 and out.exists()
    result = {"ok": ok, "exit": child["code"], "wall_s": round(child["seconds"], 2),
              "peak_rss_mb": round(stats["peak_rss_mb"]) if "peak_rss_mb" in stats else None,
              "cpu_s": round(stats["cpu_s"], 2) if "cpu_s" in stats else None,
              "flags": argv[argv.index("-o") + 2:]}
    if child["code"] is None:
        result["error"] = f"timeout after {child['seconds']:.0f} s"
    elif not ok:
        result["error"] = first_error(child["err"]) or f"exit {child['code']}, no output"
        result["crash"] = "Traceback" in child["err"]
    return result


def step(args: list[str], timeout: float) -> dict:
    """A zoo_steps.py child; its JSON result or an error."""
    child = run_child([sys.executable, str(ROOT / "bench" / "zoo_steps.py"), *args], timeout)
    if child["code"] == 0:
        return {"ok": True}
    why = f"timeout after {child['seconds']:.0f} s" if child["code"] is None else first_error(child["err"])
    return {"ok": False, "error": why or f"exit {child['code']}"}


def evaluate(model_dir: Path, candidate: Path, kind: str, work: Path, timeout: float, runs: int) -> dict:
    out = work / f"{candidate.name}.eval.json"
    res = step(["evaluate", str(model_dir), str(candidate), kind, str(out), "--runs", str(runs)], timeout)
    return json.loads(out.read_text()) if res["ok"] else res


# --- one model ------------------------------------------------------------------------------------
def bench_model(model_dir: Path, work: Path, args) -> dict:
    meta = json.loads((model_dir / "meta.json").read_text())
    deadline = time.monotonic() + args.timeout
    left = lambda: deadline - time.monotonic()           # noqa: E731  (one budget for every step)
    primary = meta.get("primary_output")
    row = {"model": model_dir.name, "task": meta.get("task"), "exporter": meta.get("exporter"),
           "opset": meta.get("opset"), "primary_output": primary, "expect": meta.get("expect", "convert"),
           "prequantized": meta.get("prequantized", False),
           "metric_kind": {"db_boxes": "boxes", "yolov8": "boxes", "yolox": "boxes", "picodet": "boxes"}.get(
               meta.get("metric", {}).get("kind"), meta.get("metric", {}).get("kind"))}
    tfl = work / "ours.tflite"
    row["convert"] = convert(model_dir, meta, tfl, left(), args.num_calib)
    if row["expect"] == "refuse":
        row["refused_cleanly"] = not row["convert"]["ok"] and not row["convert"].get("crash") \
            and "timeout" not in row["convert"].get("error", "")
        return row
    if row["convert"]["ok"]:
        row["ours"] = evaluate(model_dir, tfl, "tflite", work, left(), args.runs)
    if not args.no_qdq:
        qdq = work / "ours_qdq.onnx"
        row["qdq_convert"] = convert(model_dir, meta, qdq, left(), args.num_calib, ("--target", "qdq"))
        if row["qdq_convert"]["ok"]:
            row["ours_qdq"] = evaluate(model_dir, qdq, "onnx", work, left(), args.runs)
    if not args.no_ort and not row["prequantized"]:
        row["ort"] = {}
        for method in ORT_METHODS:
            out = work / f"ort_{method}.onnx"
            calib = ["--num-calib", str(args.num_calib)] if args.num_calib else []
            res = step(["ort-quantize", str(model_dir), method, str(out), *calib], left())
            if res["ok"]:
                res = {**json.loads(out.with_suffix(".json").read_text()),
                       **evaluate(model_dir, out, "onnx", work, left(), args.runs)}
            row["ort"][method] = res
    summarise(row)
    return row


def _primary(result: dict | None, primary: str | None) -> float | None:
    if not result or "sqnr_db" not in result:
        return None
    sq = result["sqnr_db"]
    return sq.get(primary, min(sq.values())) if sq else None


def summarise(row: dict) -> None:
    """The headline figures of a row: primary-output SQNRs, the best ORT method, the gap."""
    p = row["primary_output"]
    row["sqnr_ours"] = _primary(row.get("ours"), p)
    row["sqnr_qdq"] = _primary(row.get("ours_qdq"), p)
    # A method whose output has no QuantizeLinear left the model float (ORT does not quantize inside
    # an If): not a quantizer to compare with.
    ort = {m: _primary(r, p) for m, r in row.get("ort", {}).items() if r.get("quantize_nodes", 1) > 0}
    ort = {m: v for m, v in ort.items() if v is not None}
    if ort:
        row["ort_best_method"] = max(ort, key=ort.get)
        row["sqnr_ort_best"] = ort[row["ort_best_method"]]
        if row["sqnr_ours"] is not None:
            row["gap_db"] = row["sqnr_ours"] - row["sqnr_ort_best"]


# --- report ---------------------------------------------------------------------------------------
def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def status(row: dict) -> str:
    c = row["convert"]
    if row["expect"] == "refuse":
        return "refused" if row.get("refused_cleanly") else ("CONVERTED?" if c["ok"] else "CRASH")
    if c["ok"]:
        return "yes"
    return "timeout" if c["exit"] is None else ("CRASH" if c.get("crash") else "no")


def error_class(convert_result: dict) -> str:
    """The short cause of a failed convert: the typed error's code, or the crash's exception type."""
    error = convert_result.get("error") or ""
    if error.startswith("error["):
        return error[6:error.index("]")]
    if error.startswith("crash: "):
        return "crash:" + error[7:].split(":")[0].split(".")[-1]
    return error.split(" after ")[0] if error else ""


def _qdq_cell(row: dict) -> str:
    """Our QDQ SQNR, or why there is none: the convert failed, or its model did not run."""
    if not row.get("qdq_convert", {}).get("ok", True):
        return "fail"
    if (row.get("ours_qdq") or {}).get("ok") is False:
        return "no-run"
    return fmt(row.get("sqnr_qdq"))


def table(rows: list[dict], runs: int) -> str:
    head = ["model", "converts", "conv s", "cpu s", "peak MB", "SQNR ours", "ORT best", "method", "gap", "SQNR QDQ", "why"]
    if runs:
        head[-1:-1] = ["ms ours", "ms ORT"]
    lines = [head]
    for r in rows:
        c = r["convert"]
        line = [r["model"], status(r), fmt(c.get("wall_s")), fmt(c.get("cpu_s")), fmt(c.get("peak_rss_mb"), ".0f"),
                fmt(r.get("sqnr_ours")), fmt(r.get("sqnr_ort_best")), r.get("ort_best_method", "-"),
                fmt(r.get("gap_db"), "+.1f"),
                _qdq_cell(r),
                error_class(c) or (f"qdq: {error_class(r['qdq_convert'])}" if "qdq_convert" in r
                                   and not r["qdq_convert"]["ok"] else "")]
        if runs:
            best = r.get("ort", {}).get(r.get("ort_best_method"), {})
            line[-1:-1] = [fmt((r.get("ours") or {}).get("latency_ms"), ".2f"), fmt(best.get("latency_ms"), ".2f")]
        lines.append(line)
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) if i in (0, len(head) - 1) else str(c).rjust(w) for i, (c, w) in enumerate(zip(l, widths)))
            for l in lines]
    return "\n".join(text)


# figure -> lower is better; the headline figures of each task metric (bench/zoo_tasks.py)
FIGURES = {"ctc_text": (("cer", True), ("exact_vs_float", False), ("steps_vs_float", False)),
           "classify": (("accuracy", False), ("agree_vs_float", False)),
           "boxes": (("f1_vs_float", False), ("f1_vs_truth", False)),
           "vad_stream": (("agree_vs_float", False), ("accuracy", False)),
           "frame_speech": (("agree_vs_float", False), ("accuracy", False)),
           "tokens": (("agree_vs_float", False),)}


def task_table(rows: list[dict]) -> str:
    """One line per headline task figure: float, ours (TFLite), ours (QDQ), the best ORT method on that
    figure (a method that left the model float does not count), and whether ours is at or above it."""
    lines = [["model", "figure", "float", "ours", "ours QDQ", "ORT best", "method", "ours >= ORT"]]
    for r in rows:
        for fig, lower in FIGURES.get(r.get("metric_kind"), ()) if r.get("metric_kind") else ():
            get = lambda res: (res or {}).get("task", {}).get(fig)       # noqa: E731
            ort = {m: get(res) for m, res in r.get("ort", {}).items()
                   if get(res) is not None and res.get("quantize_nodes", 1) > 0}
            best = (min if lower else max)(ort, key=ort.get) if ort else None
            float_ = ((r.get("ours") or r.get("ours_qdq") or {}).get("task_float") or {}).get(fig)
            ours, qdq = get(r.get("ours")), get(r.get("ours_qdq"))
            if all(c is None for c in (float_, ours, qdq, ort.get(best))):
                continue
            verdict = "-" if ours is None or best is None else \
                ("yes" if (ours <= ort[best] if lower else ours >= ort[best]) else "NO")
            lines.append([r["model"], fig, *(fmt(c, ".3f") for c in (float_, ours, qdq, ort.get(best))),
                          best or "-", verdict])
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(l, widths)))
                     for l in lines)


def failures(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        for key, label in (("convert", "convert"), ("qdq_convert", "--target qdq")):
            c = r.get(key)
            if c and not c["ok"] and not (key == "convert" and r["expect"] == "refuse" and r.get("refused_cleanly")):
                out.append(f"{r['model']} [{label}]: {c.get('error')}")
        if r["expect"] == "refuse":
            out.append(f"{r['model']} [expected refusal]: {r['convert'].get('error') or 'converted'}")
        for name in ("ours", "ours_qdq"):
            if isinstance(r.get(name), dict) and r[name].get("ok") is False:
                out.append(f"{r['model']} [evaluate {name}]: {r[name]['error']}")
        for method, res in r.get("ort", {}).items():
            if res.get("ok") is False:
                out.append(f"{r['model']} [ORT {method}]: {res['error']}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Zoo bench (see module docstring).")
    p.add_argument("--zoo", type=Path, default=Path("/work/zoo"))
    p.add_argument("--models", help="comma-separated folder names (default: every folder with a meta.json)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per model, all steps together")
    p.add_argument("--num-calib", type=int, help="calibration samples (default: all of calib.npz)")
    p.add_argument("--runs", type=int, default=0, help="also time N single-sample runs (median ms)")
    p.add_argument("--no-ort", action="store_true", help="skip ORT's quantizer")
    p.add_argument("--no-qdq", action="store_true", help="skip our --target qdq")
    p.add_argument("--json", type=Path, help="also write the JSON document here")
    p.add_argument("--keep", type=Path, help="keep every model's outputs under this folder")
    p.add_argument("--report", type=Path, nargs="+", help="only print the table of saved --json documents")
    args = p.parse_args(argv)
    if args.report:
        rows = [r for path in args.report for r in json.loads(path.read_text())["results"]]
        return report(rows, {"loadavg_1m": None, "cpus": os.cpu_count()}, args.runs)
    names = args.models.split(",") if args.models else sorted(
        d.name for d in args.zoo.iterdir() if (d / "meta.json").exists())
    rows, started = [], time.time()
    doc = {"zoo": str(args.zoo), "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "results": rows}
    scratch = Path(tempfile.mkdtemp(prefix="ganglion-zoo-"))
    for name in names:
        work = (args.keep or scratch) / name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        try:
            rows.append(bench_model(args.zoo / name, work, args))
        except Exception as exc:    # noqa: BLE001  (a broken folder costs its row, not the run)
            rows.append({"model": name, "expect": "convert", "convert": {"ok": False, "exit": -1, "crash": True,
                         "error": f"bench: {type(exc).__name__}: {exc}"}})
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        print(f"[{time.time() - started:6.0f} s] {name}: {status(rows[-1])} ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        doc = {"zoo": str(args.zoo), "timeout_s": args.timeout, "num_calib": args.num_calib,
               "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "seconds": round(time.time() - started),
               "results": rows}
        if args.json:               # after every model: an interrupted run keeps what it measured
            args.json.write_text(json.dumps(doc, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(doc, indent=2))
    report(rows, doc, args.runs)


def report(rows: list[dict], doc: dict, runs: int) -> None:
    print()
    print(table(rows, runs))
    converted = sum(1 for r in rows if r["expect"] == "convert" and r["convert"]["ok"])
    load = f"load average {doc['loadavg_1m']:.1f} on {doc['cpus']} CPUs" if doc["loadavg_1m"] is not None else ""
    print(f"\nconverts by default: {converted}/{sum(1 for r in rows if r['expect'] == 'convert')}; "
          f"gap = SQNR ours - ORT best (primary output, dB); {load}")
    for line in failures(rows):
        print("  " + line)
    if any(r.get("metric_kind") for r in rows):
        print("\ntask metrics on the holdout (bench/zoo_tasks.py; cer: lower is better)\n" + task_table(rows))


if __name__ == "__main__":
    main()
