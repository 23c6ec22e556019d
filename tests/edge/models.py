"""Tiny real models for the device tests, written directly as TFLite flatbuffers / ONNX protos.

The device tests need real interpreters, not fakes, but must not wait for the converter: a dense
layer (y = x W^T + b, optionally ReLU) is enough to check batching, int8 I/O and numbers against
NumPy. Tests may import onnx; edge code may not.
"""
from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as s

IN, OUT = 4, 3


def weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, (OUT, IN)).astype(np.float32), rng.normal(0, 0.1, OUT).astype(np.float32)


def reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    w, b = weights(seed)
    return x.astype(np.float32) @ w.T + b


def _buffer(data: bytes | None = None):
    buf = s.BufferT()
    buf.data = np.frombuffer(data, np.uint8) if data else None
    return buf


def _tensor(name, shape, ttype, buffer, scale=None, zero=None, signature=None):
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, buffer
    if signature is not None:
        t.shapeSignature = list(signature)
    if scale is not None:
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [float(scale)], [int(zero)]
        t.quantization = q
    return t


def dense_tflite(seed: int = 0, *, int8: bool = False, dynamic_batch: bool = True) -> bytes:
    """A one-op FULLY_CONNECTED model [N,4] -> [N,3], float32 or full int8 (int8 I/O)."""
    w, b = weights(seed)
    sig = [-1, IN] if dynamic_batch else None
    buffers = [_buffer(), _buffer(), _buffer(), _buffer(), _buffer()]
    if int8:
        in_s, in_z, out_s, out_z = 4.0 / 127, 0, 0.02, 3
        w_s = float(np.abs(w).max() / 127)
        wq = np.clip(np.round(w / w_s), -127, 127).astype(np.int8)
        bq = np.round(b / (in_s * w_s)).astype(np.int32)
        buffers[2], buffers[3] = _buffer(wq.tobytes()), _buffer(bq.tobytes())
        tensors = [_tensor("x", [1, IN], s.TensorType.INT8, 1, in_s, in_z, sig),
                   _tensor("w", [OUT, IN], s.TensorType.INT8, 2, w_s, 0),
                   _tensor("b", [OUT], s.TensorType.INT32, 3, in_s * w_s, 0),
                   _tensor("y", [1, OUT], s.TensorType.INT8, 4, out_s, out_z)]
    else:
        buffers[2], buffers[3] = _buffer(w.tobytes()), _buffer(b.tobytes())
        tensors = [_tensor("x", [1, IN], s.TensorType.FLOAT32, 1, signature=sig),
                   _tensor("w", [OUT, IN], s.TensorType.FLOAT32, 2),
                   _tensor("b", [OUT], s.TensorType.FLOAT32, 3),
                   _tensor("y", [1, OUT], s.TensorType.FLOAT32, 4)]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, [0], [3], [op], "main"
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], buffers
    model.description = "ganglion test dense"
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def dense_onnx(seed: int = 0) -> bytes:
    """The same dense layer as ONNX (Gemm), batch dimension symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w, b = weights(seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
