"""Real parts for firmware tests: a tiny LiteRT model in a .gpk, small wheels, keys, bundles.

The model is written with LiteRT's own flatbuffer schema (no TensorFlow): one FULLY_CONNECTED
layer, float32 [1, 8] -> [1, 4], so building and self-testing a bundle costs milliseconds.
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from core import artifact, keys
from firmware import build as fw_build


def tiny_tflite(scale: float = 1.0) -> bytes:
    from ai_edge_litert import schema_py_generated as s
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((4, 8)) * scale).astype(np.float32)
    bias = np.arange(4, dtype=np.float32)
    f32 = s.TensorType.FLOAT32
    return _fully_connected(((f32, None),) * 4, weights, bias, op_version=1)


def tiny_tflite_int8() -> bytes:
    """The same layer, full-integer (TFLite int8 spec): int8 I/O and weights, int32 bias.

    Scales are chosen so accumulators round near .5 often: the case where two CPUs' kernels may
    land one int8 step apart, which the self-test tolerance must absorb and nothing more."""
    from ai_edge_litert import schema_py_generated as s
    rng = np.random.default_rng(11)
    weights = rng.integers(-127, 128, size=(4, 8)).astype(np.int8)
    bias = rng.integers(-2000, 2000, size=4).astype(np.int32)
    in_scale, w_scale, out_scale = 0.02, 0.01, 0.037
    i8, i32 = s.TensorType.INT8, s.TensorType.INT32
    types = ((i8, in_scale), (i8, w_scale), (i32, in_scale * w_scale), (i8, out_scale))
    return _fully_connected(types, weights, bias, op_version=4)


def _fully_connected(types, weights: np.ndarray, bias: np.ndarray, *, op_version: int) -> bytes:
    """One FULLY_CONNECTED layer x[1, 8] (w[4, 8], b[4]) -> y[1, 4] as .tflite bytes; ``types``
    gives (tensor type, quantization scale or None) for x, w, b, y."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, shape, buffer, ttype, scale):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), ttype, buffer
        if scale is not None:
            t.quantization = s.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [scale], [0]
        return t

    def buf(data=None):
        b = s.BufferT()
        b.data = None if data is None else list(data.tobytes())
        return b

    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    graph = s.SubGraphT()
    shapes = (("x", (1, 8)), ("w", (4, 8)), ("b", (4,)), ("y", (1, 4)))
    graph.tensors = [tensor(name, shape, i + 1, ttype, scale)
                     for i, ((name, shape), (ttype, scale)) in enumerate(zip(shapes, types))]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = op_version
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [buf(), buf(), buf(weights), buf(bias), buf()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tiny_gpk(path: Path, version: str = "1.0.0", scale: float = 1.0, *, int8: bool = False) -> Path:
    manifest = {"name": "tiny-fc-int8" if int8 else "tiny-fc", "version": version,
                "models": [{"format": "tflite", "file": "model.tflite"}]}
    model = tiny_tflite_int8() if int8 else tiny_tflite(scale)
    artifact.write(path, manifest, {"model.tflite": model})
    return path


def tiny_onnx() -> bytes:
    """MatMul + Add, float32 [1, 8] -> [1, 4]: the same layer as an ONNX graph (for ONNX Runtime boards)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str],
               tag: str = "py3-none-any") -> Path:
    """A real, minimal wheel (PEP 427): files + METADATA + WHEEL + RECORD with sha256s."""
    dist = f"{name}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{dist}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: ganglion-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    contents[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = folder / f"{name}-{version}-{tag}.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return out


def keypair(folder: Path, name: str = "fw") -> tuple[Path, Path]:
    return keys.generate(folder / f"{name}.key", folder / f"{name}.key.pub")


CONFIG = b'device_id = "test-device"\n\n[workers]\ncount = 1\n'


def bundle(folder: Path, key: Path, version: str, *, wheelhouse: Path, board: str = "x86_64-generic",
           gpk: Path | None = None) -> Path:
    """Build a real signed bundle for ``board`` from a local wheelhouse."""
    folder.mkdir(parents=True, exist_ok=True)
    gpk = gpk or tiny_gpk(folder / f"model-{version}.gpk")
    config = folder / "daemon.toml"
    config.write_bytes(CONFIG)
    out = folder / f"app-{version}.fw"
    fw_build.build(board, gpk, config, key, out, wheelhouse, version=version)
    return out
