"""Helpers for the frontend tests: onnx.helper graphs with a dynamic input, pinned by
``frontend.prepare``, converted to float TFLite and run in LiteRT against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters import frontend, tflite
from tests.converters.ops import harness as H

I64 = np.int64


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def model(nodes, inputs: dict, outputs: dict, inits=(), opset: int = 17,
          domains: dict | None = None) -> onnx.ModelProto:
    """An unpinned, checked model: ``inputs``/``outputs`` {name: dims} (str dims are symbolic),
    float32; ``domains``: extra opset imports {domain: version} (custom ops are not checked)."""
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in inputs.items()],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in outputs.items()],
                          list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 8
    if not domains:
        onnx.checker.check_model(m, full_check=True)
    return m


def unsqueeze(x: str, y: str, axes: list[int], opset: int, inits: list) -> onnx.NodeProto:
    """Unsqueeze in the form of ``opset`` (axes an attribute before 13, an input since)."""
    if opset < 13:
        return helper.make_node("Unsqueeze", [x], [y], axes=axes)
    inits.append(const(f"{y}_axes", np.array(axes, I64)))
    return helper.make_node("Unsqueeze", [x, f"{y}_axes"], [y])


def convert_and_compare(m: onnx.ModelProto, shapes: dict, seed: int = 0, atol: float = 1e-5):
    """Pin ``shapes``, convert to float TFLite, run it in LiteRT and onnxruntime (the original,
    unpinned model) on the same random input; returns the TFLite build result."""
    pinned = frontend.prepare(m, shapes)
    rng = np.random.default_rng(seed)
    feeds = {name: rng.uniform(-2, 2, dims).astype(np.float32) for name, dims in shapes.items()}
    refs = H.ort_run(m, feeds)
    result = tflite.build(pinned, None, tflite.TFLiteOptions(quantize="none"))
    for ref, got in zip(refs, H.tflite_run(result, feeds)):
        np.testing.assert_allclose(got, ref, atol=atol, rtol=atol)
    return result
