"""Already-quantized zoo models: what ONNX Runtime's quantizer writes from three float zoo models.

    <src>_ort_qdq      quantize_static, QDQ format (QuantizeLinear/DequantizeLinear pairs), per-channel
    <src>_ort_qop      quantize_static, QOperator format (QLinearConv, QLinearAdd, ...)
    <src>_ort_dynamic  quantize_dynamic (DynamicQuantizeLinear + MatMulInteger)

Each uses ORT's defaults as its documentation shows them (uint8 activations, int8 weights, MinMax),
after quant_pre_process, calibrated on the source model's calib.npz. The folder copies the source's
data; its meta says ``prequantized``: the reference for fidelity is this quantized model itself.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from onnxruntime import quantization as q
from onnxruntime.quantization.shape_inference import quant_pre_process

JOBS = [("resnet18_ts", "qdq"), ("resnet18_ts", "qop"), ("yolov8n_320_ts", "qdq"), ("bert_tiny_ts", "dynamic")]


class NpzReader(q.CalibrationDataReader):
    def __init__(self, path: Path):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        count = len(next(iter(arrays.values())))
        self.feeds = iter([{k: v[i] for k, v in arrays.items()} for i in range(count)])

    def get_next(self):
        return next(self.feeds, None)


def make(out: Path, source: str, form: str) -> None:
    src = out / source
    folder = out / f"{source}_ort_{form}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(src / "model.onnx"), str(prepared))
    target = str(folder / "model.onnx")
    if form == "dynamic":
        q.quantize_dynamic(str(prepared), target)
    else:
        fmt = q.QuantFormat.QDQ if form == "qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(prepared), target, NpzReader(src / "calib.npz"), quant_format=fmt, per_channel=True)
    prepared.unlink()
    for f in ("calib.npz", "holdout.npz"):
        shutil.copy(src / f, folder / f)
    meta = json.loads((src / "meta.json").read_text())
    how = {"qdq": "quantize_static, QDQ", "qop": "quantize_static, QOperator", "dynamic": "quantize_dynamic"}[form]
    meta.update(name=folder.name, source=f"{meta['source']}; then onnxruntime {how}", prequantized=True,
                exporter=f"{meta['exporter']} + onnxruntime.quantization ({how})")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def make_all(out: Path) -> None:
    for source, form in JOBS:
        if (out / source / "model.onnx").exists():
            make(out, source, form)
        else:
            print(f"quantized: {source} missing, {source}_ort_{form} skipped")
