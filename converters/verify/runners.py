"""Run a model on one sample and return float outputs by ONNX name: onnxruntime and LiteRT.

Both runners take the feeds the float ONNX model takes (ONNX names, ONNX layout, float32) and
return float32 outputs in ONNX layout, so verify compares like with like:

    OnnxRunner    the float reference or a QDQ candidate (onnxruntime, CPU); ``expose`` adds
                  intermediate tensors as outputs (for the per-layer comparison)
    TFLiteRunner  a .tflite flatbuffer in LiteRT (core.litert.make_interpreter); inputs are
                  quantized with the model's own input parameters when its I/O is int8/uint8,
                  transposed when it takes NHWC where the ONNX model takes NCHW, and outputs are
                  dequantized; ``tensor(index)`` reads any (dequantized) tensor when the
                  interpreter was built with preserve_all_tensors
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx

from converters.calibrate import runner
from converters.verify.metrics import VerifyInputError
from core.litert import make_interpreter

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


class OnnxRunner:
    def __init__(self, model: onnx.ModelProto, *, expose: list[str] = ()):
        self.output_names = [o.name for o in model.graph.output]
        names = list(dict.fromkeys(self.output_names + [n for n in expose if n not in self.output_names]))
        if expose:
            model = runner.expose(model, names)
        self.session = runner.make_session(model)
        self.names = names
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.names, values))


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    """Float values of a LiteRT tensor (per-tensor or per-channel parameters)."""
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float32)
    zero_points = np.asarray(params.get("zero_points", []), np.float32)
    if scales.size == 0:
        return value.astype(np.float32)          # an integer tensor that is not quantized
    if scales.size > 1:
        shape = [1] * value.ndim
        shape[params.get("quantized_dimension", 0)] = -1
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return ((value.astype(np.float32) - zero_points) * scales).astype(np.float32)


def _quantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    if not scale:
        return np.clip(np.round(value), info.min, info.max).astype(detail["dtype"])
    q = np.round(np.asarray(value, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def align(value: np.ndarray, shape: tuple) -> np.ndarray:
    """``value`` brought to ``shape``: as is, NHWC->NCHW, or a reshape of the same size."""
    shape = tuple(shape)
    if value.shape == shape:
        return value
    if value.ndim == 4 and len(shape) == 4 and tuple(value.transpose(NHWC_TO_NCHW).shape) == shape:
        return value.transpose(NHWC_TO_NCHW)
    if value.size == int(np.prod(shape)):
        return value.reshape(shape)
    raise VerifyInputError(f"candidate output of shape {list(value.shape)} cannot be compared with "
                           f"the reference's {list(shape)}",
                           hint="was the artifact converted from this reference model?")


class TFLiteRunner:
    def __init__(self, model: bytes, onnx_inputs: list[str], onnx_outputs: list[str], *,
                 preserve_all_tensors: bool = False, num_threads: int | None = None):
        with warnings.catch_warnings():
            # LiteRT warns that preserving tensors costs memory: that is what we asked for.
            warnings.simplefilter("ignore", UserWarning)
            # Tensors inside a delegated (XNNPACK) partition are never written back, so reading
            # intermediates needs the builtin kernels; plain runs keep the deployed XNNPACK path.
            self.interp = make_interpreter(model, num_threads=num_threads, use_xnnpack=not preserve_all_tensors,
                                           preserve_all_tensors=preserve_all_tensors)
        self.inputs = _match(self.interp.get_input_details(), onnx_inputs, "input")
        self.outputs = _match(self.interp.get_output_details(), onnx_outputs, "output")
        self.details = {d["index"]: d for d in self.interp.get_tensor_details()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, detail in self.inputs.items():
            self.interp.set_tensor(detail["index"], self._prepare(feeds[name], detail))
        self.interp.invoke()
        return {name: _dequantize(self.interp.get_tensor(d["index"]), d) for name, d in self.outputs.items()}

    def tensor(self, index: int) -> np.ndarray:
        return _dequantize(self.interp.get_tensor(index), self.details[index])

    @staticmethod
    def _prepare(value: np.ndarray, detail: dict) -> np.ndarray:
        want = tuple(int(d) for d in detail["shape"])
        if value.shape != want and value.ndim == 4 and value.transpose(NCHW_TO_NHWC).shape == want:
            value = value.transpose(NCHW_TO_NHWC)          # an artifact converted with --layout nhwc
        if tuple(value.shape) != want:
            raise VerifyInputError(f"sample for TFLite input {detail['name']!r} has shape "
                                   f"{list(value.shape)}, the model takes {list(want)}",
                                   hint="verify with data shaped like the float ONNX model's inputs")
        if np.dtype(detail["dtype"]).kind in "iu" and value.dtype.kind == "f":
            return _quantize(value, detail)
        # reshape: ascontiguousarray turns a 0-d value (a scalar input) into 1-d
        return np.ascontiguousarray(value, dtype=detail["dtype"]).reshape(want)


def _match(details: list[dict], onnx_names: list[str], kind: str) -> dict[str, dict]:
    """ONNX name -> LiteRT tensor detail: by name when all names match, else by position."""
    by_name = {d["name"]: d for d in details}
    if all(name in by_name for name in onnx_names):
        return {name: by_name[name] for name in onnx_names}
    if len(details) != len(onnx_names):
        raise VerifyInputError(f"the TFLite model has {len(details)} {kind}s, the reference ONNX has "
                               f"{len(onnx_names)}", hint="was the artifact converted from this model?")
    return dict(zip(onnx_names, details))
