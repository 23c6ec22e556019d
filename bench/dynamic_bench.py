"""Dynamically quantized models (``quantize_dynamic`` output) through ``ganglion convert`` to int8.

    .venv/bin/python bench/dynamic_bench.py --quantized Q.onnx --float F.onnx --calib C.npz --holdout H.npz
                                            [--input-shape name=1,1,64,128] [--labels L.json --charset C.json]
                                            [--save-float R.onnx] [--limit N] [--json out.json]

``Q`` is the quantized model; ``R`` the float graph the reader makes of it (its weights
dequantized: the float model Q stands for, ``--save-float`` writes it); ``F`` (optional) the float
model Q was quantized from. Q (and F) are converted to int8 TFLite with the same calibration data
(``converters.api.convert``, default flags plus --input-shape) and run in LiteRT; Q, R, F run in
onnxruntime, all on the same holdout samples, in one run. SQNR (dB, over all samples, first output):

    ours(Q) vs ORT(Q)   the reader + int8 pipeline against the quantized model as ONNX Runtime runs it
    ours(Q) vs ORT(R)   against the float model Q stands for; ORT(Q) vs ORT(R): ONNX Runtime's own
    ours(Q) vs ORT(F)   against the float model Q was quantized from; ORT(Q) vs ORT(F), ours(F) vs ORT(F)

plus, when the output is a per-step class score (OCR), the share of samples whose greedy CTC
decode (argmax, repeats and class 0 dropped) equals the float model's, the exact-text accuracy on
--labels/--charset (tpzoo's holdout_labels.json, charset.json), and convert times.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from converters.api import convert  # noqa: E402
from converters.config import ConvertConfig  # noqa: E402
from converters.frontend import quantized  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from core.litert import make_interpreter  # noqa: E402


def load_feeds(path: Path, model: Path, limit: int | None) -> list[dict[str, np.ndarray]]:
    """One feed per sample: every array of the npz split along its first axis, shaped like the
    model's input (a stack of batch-1 samples [N, 1, ...] or of unbatched ones [N, ...])."""
    data = np.load(path)
    ranks = {i.name: len(i.shape) for i in ort.InferenceSession(str(model)).get_inputs()}
    count = min(len(v) for v in data.values())
    count = count if limit is None else min(count, limit)
    feeds = []
    for i in range(count):
        feed = {k: data[k][i] for k in data.files}
        feeds.append({k: v if v.ndim == ranks.get(k, v.ndim) else v[None] for k, v in feed.items()})
    return feeds


def run_ort(path: Path, feeds: list[dict]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, feed)[0] for feed in feeds]


def run_tflite(flat: bytes, feeds: list[dict]) -> list[np.ndarray]:
    interp = make_interpreter(flat, num_threads=2)
    details = {d["name"]: d for d in interp.get_input_details()}
    out = interp.get_output_details()[0]
    results = []
    for feed in feeds:
        for name, value in feed.items():
            d = details.get(name) or next(iter(details.values()))
            interp.set_tensor(d["index"], value.astype(d["dtype"]).reshape(d["shape"]))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return results


def to_int8(model: Path, calib: Path, shapes: tuple, work: Path) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert(ConvertConfig(model=model, output=work / f"{model.stem}.tflite", calib=calib,
                                       input_shapes=shapes, progress=False))
    return result.files["model.tflite"], time.perf_counter() - t0


def sqnr(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    return sqnr_db(np.concatenate([r.ravel() for r in ref]), np.concatenate([g.ravel() for g in got]))


def ctc_text(scores: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC decode of [steps, classes] scores (the step axis is the longest non-class axis)."""
    ids = np.argmax(scores.reshape(-1, scores.shape[-1]), axis=-1)
    return tuple(int(c) for k, c in enumerate(ids) if c != 0 and (k == 0 or c != ids[k - 1]))


def text_agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> float | None:
    if ref[0].ndim < 2 or ref[0].shape[-1] < 2:
        return None
    return float(np.mean([ctc_text(r) == ctc_text(g) for r, g in zip(ref, got)]))


def text_accuracy(outputs: list[np.ndarray], labels: Path, charset: Path) -> float:
    """Share of samples whose decoded text is the label (tpzoo's holdout_labels.json / charset.json)."""
    texts, chars = json.loads(labels.read_text())["texts"], json.loads(charset.read_text())
    return float(np.mean([''.join(chars[c] for c in ctc_text(o)) == t for o, t in zip(outputs, texts)]))


def measure(args) -> dict:
    shapes = tuple((n, tuple(int(d) for d in s.split(","))) for n, s in
                   (item.split("=") for item in args.input_shape))
    feeds = load_feeds(args.holdout, args.quantized, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rewritten = args.save_float or work / "float.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx.save(quantized.rewrite(onnx.load(str(args.quantized)))[0], str(rewritten))
        outputs = {"ORT(Q)": run_ort(args.quantized, feeds), "ORT(R)": run_ort(rewritten, feeds)}
        flat, seconds = to_int8(args.quantized, args.calib, shapes, work)
        outputs["ours(Q)"], times = run_tflite(flat, feeds), {"Q": round(seconds, 1)}
        pairs = [("ours(Q)", "ORT(Q)"), ("ours(Q)", "ORT(R)"), ("ORT(Q)", "ORT(R)")]
        if args.float:
            flat, seconds = to_int8(args.float, args.calib, shapes, work)
            outputs["ours(F)"], times["F"] = run_tflite(flat, feeds), round(seconds, 1)
            outputs["ORT(F)"] = run_ort(args.float, feeds)
            pairs += [("ours(Q)", "ORT(F)"), ("ORT(Q)", "ORT(F)"), ("ours(F)", "ORT(F)")]
    reference = "ORT(F)" if args.float else "ORT(R)"
    return {"quantized": str(args.quantized), "float": str(args.float), "samples": len(feeds), "convert_s": times,
            "sqnr_db": {f"{a} vs {b}": round(sqnr(outputs[b], outputs[a]), 2) for a, b in pairs},
            f"text_equal_to_{reference}": {a: text_agreement(outputs[reference], o)
                                           for a, o in outputs.items() if a != reference},
            "text_accuracy": ({a: text_accuracy(o, args.labels, args.charset) for a, o in outputs.items()}
                              if args.labels and args.charset else None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantized", type=Path, required=True)
    parser.add_argument("--float", type=Path, help="the float model the quantized one was made from")
    parser.add_argument("--save-float", type=Path, help="write the float graph the reader makes of it here")
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--input-shape", action="append", default=[])
    parser.add_argument("--labels", type=Path, help="holdout texts (JSON {texts: [...]}) for OCR accuracy")
    parser.add_argument("--charset", type=Path, help="class id -> character (JSON list)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    row = measure(args)
    print(f"{row['samples']} samples; convert " + ", ".join(f"{v} s ({k})" for k, v in row["convert_s"].items()))
    print(f"{'pair':<22}{'SQNR dB':>9}")
    for pair, value in row["sqnr_db"].items():
        print(f"{pair:<22}{value:>9.2f}")
    key = next(k for k in row if k.startswith("text_equal_to_"))
    for name, share in row[key].items():
        if share is not None:
            print(f"decoded text (argmax, CTC) of {name} equal to {key[len('text_equal_to_'):]}'s: {share:.1%}")
    for name, share in (row["text_accuracy"] or {}).items():
        print(f"text accuracy of {name} on the labels: {share:.1%}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
