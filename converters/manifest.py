"""The artifact manifest: what a device (and a person) needs to know about the model(s) inside.

Follows shared/DESIGN.md "The quantized artifact". ``core.artifact.pack`` adds ``files`` (sha256
per member) and ``format_version``; the ed25519 signature covers the exact manifest bytes.

    name, version               artifact identity (default name: the model file's stem)
    converter                   {"name": "ganglion-edge", "version": ...}
    source_model                {"file", "sha256", "opset", "producer"}
    inputs / outputs            [{name, dtype, shape, layout, quant: {scale, zero_point} | null}]
    preprocessing, labels       how raw data becomes input; class names (or null)
    quantization                {mode, io, layout, observer, keep_float, weights/activations/bias scheme,
                                 qdq: {profile, activations, bias, bias_correction} when a QDQ ONNX is built}
    calibration                 {method, max_samples, source (file name), source_sha256} or null
    fidelity                    the verify report per format, when --holdout was given
    tensor_map                  ONNX tensor name -> TFLite tensor index and layout perm
    models                      [{format: "tflite" | "onnx", file}]
    frozen_inputs               {input: value} frozen by --input-value (not model inputs any more), if any
    state                       [{output, input}]: recurrent state fed back call to call, if any
    cut_outputs                 [tensor]: the source model was cut at these tensors (--outputs), if any
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx

from converters.calibrate.preprocess import PreprocessSpec
from core import __version__

MODEL_ENTRIES = {"tflite": ("tflite", "model.tflite"), "qdq": ("onnx", "model.qdq.onnx")}
SCHEMES = {
    "int8": {"weights": "int8 per-channel symmetric (zero point 0)", "activations": "int8 per-tensor asymmetric",
             "bias": "int32, scale = input_scale * weight_scale"},
    "float16": {"weights": "float16", "activations": "float32", "bias": "float32"},
    "dynamic": {"weights": "int8 per-channel symmetric (dequantized at run time)", "activations": "float32",
                "bias": "float32"},
    "none": {"weights": "float32", "activations": "float32", "bias": "float32"},
}


def build(cfg, model: onnx.ModelProto, built: dict, *, ranges=None, report=None, keep_float=(), state=()) -> dict:
    """The manifest dict for a conversion (see the module doc for the fields); ``state``: the
    (output, input) recurrent pairs calibration fed back (calibrate/stream.py)."""
    tfl = built.get("tflite", (None, None))[1]
    inputs, outputs = (_io(tfl.inputs), _io(tfl.outputs)) if tfl is not None else _onnx_io(model)
    return {
        "name": cfg.artifact_name,
        "version": cfg.version,
        "converter": {"name": "ganglion-edge", "version": __version__},
        "source_model": _source(cfg.model, model),
        "inputs": inputs,
        "outputs": outputs,
        "preprocessing": _preprocessing(cfg.preprocess, cfg.layout),
        "labels": _labels(cfg.labels),
        "quantization": {"mode": cfg.quantize, "io": cfg.io, "layout": cfg.layout,
                         "observer": cfg.observer if ranges is not None else None,
                         "keep_float": list(keep_float), **SCHEMES[cfg.quantize],
                         **({"qdq": _qdq_scheme(cfg)} if "qdq" in built else {})},
        "calibration": _calibration(cfg) if ranges is not None else None,
        "fidelity": report,
        "tensor_map": _plain(getattr(tfl, "tensor_map", None) or {}),
        "models": [{"format": MODEL_ENTRIES[f][0], "file": MODEL_ENTRIES[f][1]} for f in built],
        **_streaming(cfg, state),
        **cfg.extra,
    }


# What each QDQ profile stores (converters.qdq.builder.PROFILES), in the manifest's words.
QDQ_SCHEMES = {
    "tensorrt": {"activations": "int8 per-tensor symmetric (zero point 0)", "bias": "float32"},
    "onnxruntime": {"activations": "uint8 per-tensor asymmetric",
                    "bias": "int32, scale = input_scale * weight_scale"},
}


def _streaming(cfg, state) -> dict:
    """``frozen_inputs`` {name: value(s)} (--input-value; no longer model inputs) and ``state``
    [{output, input}] (the caller feeds each output back as the input of the next call)."""
    extra = {}
    if cfg.input_values:
        extra["frozen_inputs"] = {name: list(values) if len(values) > 1 else values[0]
                                  for name, values in cfg.input_values}
    if state:
        extra["state"] = [{"output": out, "input": inp} for out, inp in state]
    if cfg.outputs:
        extra["cut_outputs"] = list(cfg.outputs)
    return extra


def _qdq_scheme(cfg) -> dict:
    """The quantization entry of the onnx model: its profile, and that Conv/Gemm biases were
    corrected for the weights' rounding on the calibration data."""
    return {"profile": cfg.qdq_flavour, "weights": SCHEMES["int8"]["weights"], **QDQ_SCHEMES[cfg.qdq_flavour],
            "bias_correction": cfg.calib is not None}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def opset_of(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _source(path: Path, model: onnx.ModelProto) -> dict:
    return {"file": path.name, "sha256": file_sha256(path), "opset": opset_of(model),
            "producer": f"{model.producer_name} {model.producer_version}".strip() or None}


def _calibration(cfg) -> dict:
    source = Path(cfg.calib)
    return {"method": cfg.observer, "max_samples": cfg.num_calib, "source": source.name,
            "source_sha256": file_sha256(source) if source.is_file() else None}


def _preprocessing(spec, layout: str = "onnx") -> dict | None:
    """The spec as the device applies it. One that lays images out NCHW (the ONNX model's layout)
    would feed a ``--layout nhwc`` TFLite model CHW frames: it says "auto" instead, which
    edge.preprocess (and verify, for the NCHW reference) resolve from each model's input shape."""
    if spec is None:
        return None
    out = PreprocessSpec.parse(spec).to_dict()
    if layout == "nhwc" and out["layout"] == "NCHW":
        out["layout"] = "auto"
    return out


def _labels(path) -> list[str] | None:
    if path is None:
        return None
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _io(specs) -> list[dict]:
    return [_plain(s) for s in specs]


def _onnx_io(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """I/O of a QDQ-only artifact: the ONNX signature (float32, ONNX layout, no quant params)."""
    inits = {i.name for i in model.graph.initializer}

    def entry(vi):
        tt = vi.type.tensor_type
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                "shape": [d.dim_value for d in tt.shape.dim], "layout": "onnx", "quant": None}
    return ([entry(vi) for vi in model.graph.input if vi.name not in inits],
            [entry(vi) for vi in model.graph.output])


def _plain(value):
    """JSON-ready copy of specs/dataclasses/numpy values (the manifest is plain JSON)."""
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    return value
