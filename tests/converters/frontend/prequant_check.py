"""Shared helpers of the already-quantized ONNX tests (test_prequantized.py, test_prequantized_ops.py):
convert without calibration, run both runtimes, read back scales, compare in output steps."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from converters.api import convert
from converters.carried import CarriedScaleWarning
from converters.config import ConvertConfig
from core.litert import make_interpreter
from tests.converters import prequant_models as pm

GANGLION = Path(sys.executable).with_name("ganglion")
# QOperator nodes: input positions of their output (scale, zero point), per the op specs
OUT_PARAMS = {"QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8), "QLinearAdd": (6, 7),
              "QLinearMul": (6, 7), "QLinearSigmoid": (3, 4), "QLinearLeakyRelu": (3, 4),
              "QLinearGlobalAveragePool": (3, 4), "QLinearConcat": (0, 1)}
TFLITE_FIXED = {"Sigmoid", "QLinearSigmoid"}     # LOGISTIC's output params are fixed by TFLite


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def to_tflite(model_path: Path, out: Path, **kw):
    """convert() without --calib; returns (result, carried-scale warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(ConvertConfig(model=model_path, output=out, progress=False, **kw))
    return result, [str(w.message) for w in caught if issubclass(w.category, CarriedScaleWarning)]


def run_tflite(flat: bytes, feeds: list[dict]) -> list[np.ndarray]:
    interp = make_interpreter(flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for feed in feeds:
        interp.set_tensor(inp["index"], feed[pm.INPUT])
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).copy())
    return outputs


def run_ort(path: Path, feeds: list[dict]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, feed)[0] for feed in feeds]


def tflite_quant(flat: bytes, tensor_map: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ONNX tensor name -> (scales float32, zero points) of its int8 TFLite tensor."""
    details = {d["index"]: d for d in make_interpreter(flat).get_tensor_details()}
    out = {}
    for name, entry in tensor_map.items():
        q = details[entry["index"]]["quantization_parameters"]
        if len(q["scales"]):
            out[name] = (np.asarray(q["scales"], np.float32), np.asarray(q["zero_points"]))
    return out


def model_activation_params(model: onnx.ModelProto) -> dict[str, tuple[np.float32, int]]:
    """What the quantized ONNX model itself says: tensor -> (scale, zero point mapped to int8)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fixed = {o for n in model.graph.node if n.op_type in TFLITE_FIXED for o in n.output}
    out = {}

    def add(name, scale_name, zp_name):
        zp = inits[zp_name]
        shift = 128 if zp.dtype == np.uint8 else 0
        out[name] = (np.float32(inits[scale_name]), int(zp) - shift)

    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[0] not in fixed:
            add(n.input[0], n.input[1], n.input[2])
        elif n.op_type in OUT_PARAMS and n.op_type not in TFLITE_FIXED:
            s, z = OUT_PARAMS[n.op_type]
            add(n.output[0], n.input[s], n.input[z])
    return out


def output_step(model: onnx.ModelProto, output: str = "y") -> float:
    """The scale of the quantized model's output (its DequantizeLinear in front of the output)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == output)
    return float(inits[dq.input[1]])


def steps_apart(a: list[np.ndarray], b: list[np.ndarray], step: float) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b)) / step


def sqnr_db(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    ref, got = np.concatenate([r.ravel() for r in ref]), np.concatenate([g.ravel() for g in got])
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - got) ** 2), 1e-30)))
