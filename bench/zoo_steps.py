"""The steps of bench/zoo_bench.py that run in a child process each (so a crash or a hang in one
runtime costs one measurement, never the run).

    .venv/bin/python bench/zoo_steps.py ort-quantize MODEL_DIR METHOD OUT.onnx [--num-calib N]
    .venv/bin/python bench/zoo_steps.py evaluate MODEL_DIR CANDIDATE (tflite|onnx) OUT.json [--runs N]

ort-quantize   onnxruntime.quantization.quantize_static after ORT's recommended quant_pre_process
               (shape inference + graph optimisation, which folds BatchNorm into Conv), QDQ format,
               per-channel int8 weights, int8 activations, METHOD = MinMax | Entropy | Percentile,
               on the model folder's calib.npz (the samples `ganglion convert --calib` gets).
               ORT's histogram calibrators keep every sample's every activation in memory until
               they histogram them; they are fed in chunks of CHUNK samples (histograms merge
               across calls, as ORT's collector is written to), which bounds memory on detectors.
evaluate       SQNR (dB) of every output of CANDIDATE (a .tflite in LiteRT, or an ONNX model in
               onnxruntime) against the folder's model.onnx in onnxruntime, over holdout.npz, the
               outputs of all samples pooled (converters.verify.metrics.sqnr_db); with --runs,
               the median latency (ms) of the candidate on the first holdout sample. A folder
               whose meta.json has a `metric` (the third-party zoo, bench/zoo/third_party.py) also
               gets its task figures (bench/zoo_tasks.py): the candidate's ("task") and the float
               model's against the ground truth ("task_float"); a streaming model (VAD) is run
               closed-loop for them, its own state fed back.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import CalibrationDataReader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.verify.metrics import sqnr_db  # noqa: E402  (after the path: the one SQNR definition)
from converters.verify.runners import OnnxRunner, TFLiteRunner, align  # noqa: E402
from core.litert import make_interpreter  # noqa: E402
from bench import zoo_tasks  # noqa: E402

CHUNK = 8


def load_samples(path: Path, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """One feed dict per sample of a zoo .npz (first axis = samples; 0-d inputs stay arrays)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    count = len(next(iter(arrays.values())))
    count = count if limit is None else min(count, limit)
    return [{k: np.asarray(v[i]) for k, v in arrays.items()} for i in range(count)]


# --- ORT's static quantizer ---------------------------------------------------------------------
class ListReader(CalibrationDataReader):
    """A CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def _chunked_histograms() -> None:
    """Make ORT's histogram calibrators collect CHUNK samples at a time (see module doc)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater
    original = HistogramCalibrater.collect_data
    if getattr(original, "chunked", False):
        return

    def collect_data(self, data_reader):
        while True:
            chunk = []
            while len(chunk) < CHUNK and (feed := data_reader.get_next()) is not None:
                chunk.append(feed)
            if not chunk:
                return
            original(self, ListReader(chunk))
    collect_data.chunked = True
    HistogramCalibrater.collect_data = collect_data


def prepare(model_dir: Path, work: Path) -> tuple[Path, str]:
    """ORT's recommended pre-processing, once per model; falls back to the model as it is.
    Below opset 13 the model is first upgraded to 13: ORT's per-channel QDQ output needs
    DequantizeLinear's axis (opset 13) and is invalid otherwise."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared, source, note = work / "ort_pre.onnx", model_dir / "model.onnx", ""
    if prepared.exists():
        return prepared, (work / "ort_pre.txt").read_text()
    model = onnx.load(str(source))
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
        source = work / "ort_opset13.onnx"
        onnx.save(onnx.version_converter.convert_version(model, 13), str(source))
        note = "opset upgraded to 13; "
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=skip_symbolic)
            note += "quant_pre_process" + (" (no symbolic shapes)" if skip_symbolic else "")
            (work / "ort_pre.txt").write_text(note)
            return prepared, note
        except Exception as exc:        # noqa: BLE001  (ORT raises anything; the raw model is the fallback)
            failed = f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:120]}); raw model"
    return source, note + failed


def spread(samples: list, chunk: int) -> list:
    """The samples reordered so that every run of `chunk` holds samples from across the whole set
    (0, m, 2m, ... then 1, m+1, ...). ORT's histogram calibrators fix their bin width on the first
    chunk and add bins when a later chunk's range is wider: a first chunk of near-silence (a
    recorded stream starts quietly) made ORT 1.32 grow millions of bins and Entropy run for 30
    minutes on a small VAD. Applied to recorded streams only (task "vad"): on folders of
    independent samples the chunk order changes ORT's bins too (ocr_cls_mbv3: Percentile 28.5 dB
    in order, 34.2 spread, 28.4 unchunked), so they keep the order the baselines were measured
    with. MinMax does not depend on the order."""
    m = -(-len(samples) // chunk)
    return [samples[i] for i in sorted(range(len(samples)), key=lambda i: (i % m, i))]


def quantized_nodes(graph: onnx.GraphProto) -> int:
    """QuantizeLinear nodes in a graph and its subgraphs (0: the quantizer left the model float)."""
    count = 0
    for node in graph.node:
        count += node.op_type == "QuantizeLinear"
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += quantized_nodes(attr.g)
    return count


def ort_quantize(model_dir: Path, method: str, out: Path, num_calib: int | None) -> dict:
    from onnxruntime import quantization as q
    _chunked_histograms()
    source, note = prepare(model_dir, out.parent)
    feeds = load_samples(model_dir / "calib.npz", num_calib)
    if json.loads((model_dir / "meta.json").read_text()).get("task") == "vad":     # a recorded stream
        feeds = spread(feeds, CHUNK)
    start = time.perf_counter()
    q.quantize_static(str(source), str(out), ListReader(feeds), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=getattr(q.CalibrationMethod, method))
    return {"method": method, "seconds": time.perf_counter() - start, "prepared": note, "samples": len(feeds),
            "quantize_nodes": quantized_nodes(onnx.load(str(out)).graph)}


# --- fidelity against the reference -------------------------------------------------------------
def evaluate(model_dir: Path, candidate: Path, kind: str, runs: int) -> dict:
    reference = onnx.load(str(model_dir / "model.onnx"))
    ref = OnnxRunner(reference)
    inputs = [i.name for i in reference.graph.input
              if i.name not in {init.name for init in reference.graph.initializer}]
    if kind == "tflite":
        # an input the converter froze (one value in the calibration data) is no TFLite input
        taken = {d["name"] for d in make_interpreter(candidate.read_bytes()).get_input_details()}
        inputs = [name for name in inputs if name in taken] if len(taken) < len(inputs) else inputs
        cand = TFLiteRunner(candidate.read_bytes(), inputs, ref.output_names, num_threads=2)
    else:
        cand = OnnxRunner(onnx.load(str(candidate)))
    samples = load_samples(model_dir / "holdout.npz")
    refs, cands = [], []
    for feeds in samples:
        want, got = ref.run(feeds), cand.run(feeds)
        refs.append(want)
        cands.append({name: align(np.asarray(got[name]), want[name].shape) for name in ref.output_names})
    result = {"samples": len(samples),
              "sqnr_db": {name: sqnr_db(np.concatenate([r[name].ravel() for r in refs]),
                                        np.concatenate([c[name].ravel() for c in cands]))
                          for name in ref.output_names}}
    meta = json.loads((model_dir / "meta.json").read_text())
    if "metric" in meta:
        result.update(task_figures(model_dir, meta, ref, cand, samples, refs, cands))
    if runs:
        result["latency_ms"] = _median_ms(lambda: cand.run(samples[0]), runs)
    return result


def task_figures(model_dir: Path, meta: dict, ref, cand, samples, refs, cands) -> dict:
    """bench/zoo_tasks.py's figures of the candidate ("task") and of the float model ("task_float",
    against the ground truth in holdout_labels.json)."""
    labels_path = model_dir / "holdout_labels.json"
    labels = json.loads(labels_path.read_text()) if labels_path.exists() else {}
    metric = meta["metric"]
    if metric["kind"] == "vad_stream":
        starts = set(labels.get("clip_starts", [0]))
        ref_p, cand_p = stream(ref, samples, starts, metric), stream(cand, samples, starts, metric)
        return {"task": zoo_tasks.vad_scores(ref_p, cand_p, labels, metric["threshold"]),
                "task_float": zoo_tasks.vad_scores(ref_p, ref_p, labels, metric["threshold"])}
    return {"task": zoo_tasks.score(meta, model_dir, refs, cands, labels, ref.output_names),
            "task_float": zoo_tasks.score(meta, model_dir, refs, refs, labels, ref.output_names)}


def stream(runner, samples: list[dict], starts: set[int], metric: dict) -> list[float]:
    """A streaming model run closed-loop, as a device runs it: each state output fed back as the
    next call's state input, zeros at each clip start; the output probability per call."""
    (state_out, state_in), = metric["state"].items()
    probs, state = [], None
    for i, feeds in enumerate(samples):
        if i in starts or state is None:
            state = np.zeros_like(feeds[state_in])
        out = runner.run({**feeds, state_in: state.astype(feeds[state_in].dtype)})
        state = np.asarray(out[state_out]).reshape(feeds[state_in].shape)
        probs.append(float(np.asarray(out[metric["output"]]).ravel()[0]))
    return probs


def _median_ms(call, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="one child step of bench/zoo_bench.py")
    sub = p.add_subparsers(dest="step", required=True)
    q = sub.add_parser("ort-quantize")
    q.add_argument("model_dir", type=Path)
    q.add_argument("method", choices=["MinMax", "Entropy", "Percentile"])
    q.add_argument("out", type=Path)
    q.add_argument("--num-calib", type=int)
    e = sub.add_parser("evaluate")
    e.add_argument("model_dir", type=Path)
    e.add_argument("candidate", type=Path)
    e.add_argument("kind", choices=["tflite", "onnx"])
    e.add_argument("out", type=Path)
    e.add_argument("--runs", type=int, default=0)
    args = p.parse_args(argv)
    if args.step == "ort-quantize":
        result = ort_quantize(args.model_dir, args.method, args.out, args.num_calib)
        args.out.with_suffix(".json").write_text(json.dumps(result))
    else:
        args.out.write_text(json.dumps(evaluate(args.model_dir, args.candidate, args.kind, args.runs)))


if __name__ == "__main__":
    main()
