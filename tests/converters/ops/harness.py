"""Shared helpers for the converter-core tests: build one-node ONNX graphs, run them in
onnxruntime (the reference) and, converted, in the real LiteRT interpreter.

Calibration ranges come from ``converters.calibrate.collect_ranges`` (minmax), i.e. from running
the float graph in onnxruntime over the same samples, exactly as ``ganglion convert`` does.
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from converters.verify.metrics import sqnr_db  # noqa: F401  (tests use H.sqnr_db: the one definition)
from core.litert import make_interpreter
from edge.cli import main


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


def tflite_run(result, feeds: dict, threads: int = 1, use_xnnpack: bool = True) -> list[np.ndarray]:
    """Run ``result`` in LiteRT; feeds/outputs are float in ONNX layout (quantizing if io is int)."""
    interp = make_interpreter(result.flatbuffer, num_threads=threads, use_xnnpack=use_xnnpack)
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
    return None   # the output is produced by a float island


def opcodes(result) -> list[str]:
    return list(result.ops)


def check(m, *, int8: bool = True, atol: float = 1e-4, steps: float = 3.0, expect=(), forbid=(),
          samples=None, io_layout: str = "onnx", islands: int = 0):
    """Convert ``m`` float (and int8), run both in LiteRT, compare with onnxruntime.

    Float: |tflite - ort| <= atol + atol * |ort|. Int8: |tflite - ort| <= steps * output scale;
    a single int8 op is off by up to ~1 step (input rounding, weight rounding, output rounding:
    0.5 step each, partly cancelling) so 2-3 steps leaves room for the first two without hiding a
    wrong scale or zero point, which shows as tens of steps. ``expect``/``forbid``: opcodes that
    must / must not be in the float model. ``islands``: how many DEQUANTIZE ops besides the
    output edges the int8 model may have (0 = every op runs in int8).
    """
    samples = samples or samples_for(m)
    feeds = samples[0]
    refs = ort_run(m, feeds)
    res = convert(m, "none", layout=io_layout)
    for ref, got in zip(refs, tflite_run(res, feeds)):
        np.testing.assert_allclose(got, ref, atol=atol, rtol=atol)
    for op in expect:
        assert op in res.ops, f"{op} not in {res.ops}"
    for op in forbid:
        assert op not in res.ops, f"{op} in {res.ops}"
    if not int8:
        return res, None
    q = convert(m, "int8", samples=samples, layout=io_layout)
    assert q.ops.count("DEQUANTIZE") <= len(q.outputs) + islands, f"float islands in {q.ops}"
    for i, (ref, got) in enumerate(zip(refs, tflite_run(q, feeds))):
        scale = output_scale(q, i) or float(ref.max() - ref.min()) / 255
        err = np.abs(got - ref).max() / scale
        assert err <= steps, f"int8 output {i} off by {err:.2f} steps (scale {scale:.3g}); ops {q.ops}"
    return res, q


def one_node(op: str, inputs: dict, inits: dict | None = None, n_out: int = 1, opset: int = 17,
             input_names: list[str] | None = None, **attrs):
    """A one-node model: ``inputs`` are float activations, ``inits`` constants (in this order
    unless ``input_names`` says otherwise); outputs y (or y0, y1, ...)."""
    names = input_names or [*inputs, *(inits or {})]
    outs = ["y"] if n_out == 1 else [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    return model([node], inputs, outs, inits, opset=opset)


def convert_both(tmp_path, m: onnx.ModelProto, calib: dict) -> tuple[list[str], onnx.ModelProto]:
    """``ganglion convert --target both`` of ``m`` with ``calib`` ({input name: stacked samples}):
    the manifest's keep_float and the QDQ model."""
    onnx.save(m, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", **calib)
    out = tmp_path / "m.gpk"
    assert main(["convert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "--target", "both", "-o", str(out), "-q"]) == 0
    with zipfile.ZipFile(out) as z:
        return (json.loads(z.read("manifest.json"))["quantization"]["keep_float"],
                onnx.load_from_string(z.read("model.qdq.onnx")))
