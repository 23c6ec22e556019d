"""Shared helpers for the converter-core tests: build one-node ONNX graphs, run them in
onnxruntime (the reference) and, converted, in the real LiteRT interpreter.

Calibration ranges come from ``converters.calibrate.collect_ranges`` (minmax), i.e. from running
the float graph in onnxruntime over the same samples, exactly as ``ganglion convert`` does.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from edge.litert import make_interpreter


def model(nodes, inputs: dict, outputs: list[str], inits: dict | None = None, opset: int = 17):
    """A checked ONNX model: inputs {name: shape} (float32), outputs by name, inits {name: array}."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)   # fills the output shapes the checker wants
    return frontend.prepare(m)


def samples_for(m: onnx.ModelProto, n: int = 8, seed: int = 0, low: float = -2.0, high: float = 2.0):
    rng = np.random.default_rng(seed)
    out = []
    for vi in m.graph.input:
        if vi.name in {i.name for i in m.graph.initializer}:
            continue
    inits = {i.name for i in m.graph.initializer}
    specs = [(vi.name, [d.dim_value for d in vi.type.tensor_type.shape.dim])
             for vi in m.graph.input if vi.name not in inits]
    for _ in range(n):
        out.append({name: rng.uniform(low, high, shape).astype(np.float32) for name, shape in specs})
    return out


def ort_run(m: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def convert(m, quantize="none", samples=None, **opts):
    ranges = collect_ranges(m, samples, method="minmax", progress=False) if quantize == "int8" else None
    options = tflite.TFLiteOptions(quantize=quantize, **opts)
    return tflite.build(m, ranges, options)


def tflite_run(result, feeds: dict, threads: int = 1) -> list[np.ndarray]:
    """Run ``result`` in LiteRT; feeds/outputs are float in ONNX layout (quantizing if io is int)."""
    interp = make_interpreter(result.flatbuffer, num_threads=threads)
    for spec in result.inputs:
        value = np.asarray(feeds[spec.name], np.float32)
        if spec.layout == "nhwc":
            value = value.transpose(0, 2, 3, 1)
        if spec.dtype in ("int8", "uint8"):
            info = np.iinfo(spec.dtype)
            value = np.clip(np.round(value / spec.scale) + spec.zero_point, info.min, info.max)
        interp.set_tensor(spec.index, np.ascontiguousarray(value.astype(spec.dtype)))
    interp.invoke()
    outs = []
    for spec in result.outputs:
        value = interp.get_tensor(spec.index)
        if spec.dtype in ("int8", "uint8"):
            value = (value.astype(np.float32) - spec.zero_point) * spec.scale
        if spec.layout == "nhwc":
            value = value.transpose(0, 3, 1, 2)
        outs.append(value)
    return outs


def output_scale(result, i: int = 0) -> float:
    """The int8 scale of output ``i`` (read from the int8 tensor feeding the final DEQUANTIZE)."""
    interp = make_interpreter(result.flatbuffer)
    name = result.outputs[i].name
    for d in interp.get_tensor_details():
        if d["name"] in (f"{name}/int8", name) and d["dtype"] == np.int8:
            return float(d["quantization"][0])
    raise AssertionError(f"no int8 tensor for output {name}")


def opcodes(result) -> list[str]:
    return list(result.ops)
