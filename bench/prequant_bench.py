"""Fidelity of already-quantized ONNX models converted without calibration data.

    .venv/bin/python bench/prequant_bench.py                       # table
    .venv/bin/python bench/prequant_bench.py --json /tmp/prequant.json

Each float model (the committed digits CNN, the test CNN/MLP of tests/converters/prequant_models.py,
and the random-weight MobileNetV2-small (96x96) and ResNet-tiny of examples/models, whose
BatchNormalizations quantize_static leaves unfolded) is quantized by ONNX Runtime (quantize_static:
QDQ and QOperator formats, uint8 and int8 activations, per-channel int8 weights; 100 calibration
samples for digits, 16 for the others), then converted by ``converters.api.convert`` with no
--calib. On held-out inputs (digits: the 450 committed holdout samples; CNN/MLP: 50 seeded ones;
MobileNetV2/ResNet: 50) it reports:

    steps     max |LiteRT - ORT quantized| in output quantization steps (the model's output scale)
    equal     share of output values that are bit-identical
    sqnr_ort  SQNR of the TFLite output against the ORT quantized model's (dB)
    sqnr_flt  SQNR of the TFLite output against the float model's (dB); ort_flt: ORT's own
    acc       top-1 on the digits labels: float / ORT int8 / TFLite int8
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from converters.api import convert  # noqa: E402
from converters.config import ConvertConfig  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from core.litert import make_interpreter  # noqa: E402
from examples.models import mobilenet_v2, resnet_tiny  # noqa: E402
from tests.converters import prequant_models as pm  # noqa: E402

DIGITS = ROOT / "examples" / "digits"


def cases(folder: Path):
    """(name, float model path, input name, calibration feeds, evaluation inputs, labels)."""
    calib = np.load(DIGITS / "calib.npz")["input"][:100]
    yield ("digits", DIGITS / "digits_cnn.onnx", "input", [{"input": x[None]} for x in calib],
           np.load(DIGITS / "holdout.npz")["input"][:, None], np.load(DIGITS / "holdout_labels.npy"))
    for name, model, shape in (("cnn", pm.float_cnn(), pm.CNN_SHAPE), ("mlp", pm.float_mlp(), pm.MLP_SHAPE)):
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        evals = np.stack([s[pm.INPUT] for s in pm.samples(shape, 50, seed=11)])
        yield name, path, pm.INPUT, pm.samples(shape, 16), evals, None
    # BatchNormalization left unfolded by quantize_static (random weights; the bench models)
    for name, model in (("mobilenet_v2_small", mobilenet_v2.build_small()), ("resnet_tiny", resnet_tiny.build())):
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        vi = model.graph.input[0]
        shape = tuple(d.dim_value or 1 for d in vi.type.tensor_type.shape.dim)
        feeds = [{vi.name: s[pm.INPUT]} for s in pm.samples(shape, 16)]
        evals = np.stack([s[pm.INPUT] for s in pm.samples(shape, 50, seed=11)])
        yield name, path, vi.name, feeds, evals, None


def run(flat: bytes, xs: np.ndarray) -> np.ndarray:
    interp = make_interpreter(flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ys = []
    for x in xs:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        ys.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(ys)


def run_onnx(path: Path, name: str, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: x})[0] for x in xs])


def output_scale(path: Path) -> float:
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    out = model.graph.output[0].name
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out)
    return float(inits[dq.input[1]])


def measure(folder: Path) -> list[dict]:
    rows = []
    for name, src, input_name, calib, xs, labels in cases(folder):
        y_float = run_onnx(src, input_name, xs)
        for fmt in ("QDQ", "QOperator"):
            for act in ("uint8", "int8"):
                qpath = pm.ort_static(src, folder / f"{name}_{fmt}_{act}.onnx",
                                      [{input_name: f[next(iter(f))]} for f in calib], fmt=fmt, activations=act)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = convert(ConvertConfig(model=qpath, output=folder / f"{qpath.stem}.tflite", progress=False))
                y_tfl, y_ort = run(result.files["model.tflite"], xs), run_onnx(qpath, input_name, xs)
                row = {"model": name, "format": fmt, "activations": act,
                       "steps": float(np.abs(y_tfl - y_ort).max() / output_scale(qpath)),
                       "equal": float(np.mean(y_tfl == y_ort)),
                       "sqnr_ort": sqnr_db(y_ort, y_tfl), "sqnr_flt": sqnr_db(y_float, y_tfl),
                       "ort_flt": sqnr_db(y_float, y_ort)}
                if labels is not None:
                    row["acc"] = [float(np.mean(y.argmax(1) == labels)) for y in (y_float, y_ort, y_tfl)]
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | format | activations | steps | equal | SQNR vs ORT | SQNR vs float | ORT vs float "
             "| top-1 float/ORT/TFLite |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = " / ".join(f"{a:.4f}" for a in r["acc"]) if "acc" in r else "-"
        lines.append(f"| {r['model']} | {r['format']} | {r['activations']} | {r['steps']:.2f} | {r['equal']:.3f} | "
                     f"{r['sqnr_ort']:.1f} dB | {r['sqnr_flt']:.1f} dB | {r['ort_flt']:.1f} dB | {acc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(Path(tmp))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
