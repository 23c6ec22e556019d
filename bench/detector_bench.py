"""Detector bench: the trained YOLOv8-style detector, float vs our int8 vs ORT's quantize_static.

    .venv/bin/python bench/detector_bench.py [--json out.json]

Converts ``examples/detector/detector.onnx`` the default way (``ganglion convert --calib``: the
calibration images of ``examples/detector/data.npz``), then on the held-out images reports
detection F1 (IoU 0.5, score >= 0.5, class-aware NMS; ``tests/converters/detection.py``) and SQNR
against the float model in onnxruntime, for: our int8 TFLite in LiteRT with XNNPACK and with the
reference kernels, and onnxruntime.quantization.quantize_static (QDQ, per-channel int8, MinMax,
the same calibration images) in onnxruntime. Printed as JSON and as a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import api  # noqa: E402  (after the path)
from converters.config import ConvertConfig  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from examples.detector import shapes  # noqa: E402
from tests.converters import detection  # noqa: E402
from tests.converters.detection import run_litert, run_onnx  # noqa: E402

DETECTOR = ROOT / "examples" / "detector"


def ort_quantize(calib: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": shapes.to_input(calib[i:i + 1])} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(DETECTOR / "detector.onnx"), str(out), Reader(), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def row(name: str, ref: list, got: list, boxes: list) -> dict:
    return {"model": name, "f1": round(detection.f1_score(got, boxes), 4),
            "sqnr_db": round(sqnr_db(np.concatenate(ref), np.concatenate(got)), 2)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    d = np.load(DETECTOR / "data.npz")
    calib, holdout = d["calib"], d["holdout"]
    boxes = shapes.unpack_boxes(d["holdout_boxes"], d["holdout_offsets"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "calib.npz", images=shapes.to_input(calib))
        start = time.perf_counter()
        api.convert(ConvertConfig(model=DETECTOR / "detector.onnx", output=tmp / "det.tflite",
                                  calib=tmp / "calib.npz", progress=False))
        seconds = time.perf_counter() - start
        flat = (tmp / "det.tflite").read_bytes()
        ref = run_onnx(DETECTOR / "detector.onnx", holdout)
        rows = [row("float (onnxruntime)", ref, ref, boxes),
                row("ours int8, LiteRT XNNPACK", ref, run_litert(flat, holdout, True), boxes),
                row("ours int8, LiteRT reference kernels", ref, run_litert(flat, holdout, False), boxes),
                row("ORT quantize_static int8 (QDQ)", ref, run_onnx(ort_quantize(calib, tmp / "ort.onnx"), holdout),
                    boxes)]
    report = {"images": len(holdout), "objects": int(sum(len(b) for b in boxes)),
              "convert_seconds": round(seconds, 2), "rows": rows}
    print(json.dumps(report, indent=2))
    print(f"\n{'model':<40} {'F1':>6} {'SQNR dB':>8}")
    for r in rows:
        print(f"{r['model']:<40} {r['f1']:>6.3f} {r['sqnr_db']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
