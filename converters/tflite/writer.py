"""Serialize a TGraph into a .tflite flatbuffer with the schema's object API.

Rules from the format (and FACTS.md): buffer 0 is the empty sentinel, every constant gets its own
buffer, the file identifier is "TFL3", and every int8/uint8 tensor carries quantization
parameters (checked in ``check_params`` before writing, since LiteRT accepts a nonzero weight
zero point silently).

Quantization parameters are packed through ``_SharedQuant``: identical scale / zero-point vectors
(e.g. the all-zero int64 zero points of every per-channel weight and bias of one width) and
identical whole tables are stored once and pointed at by every tensor that uses them. Flatbuffers
allows any number of references to one stored object; the object API's ``Pack`` would emit a copy
per tensor, which was ~0.4 MB of a 3.5 MB MobileNetV2.
"""
from __future__ import annotations

import ai_edge_litert.schema_py_generated as schema
import flatbuffers
import numpy as np

from converters.errors import ConvertError
from converters.tflite.check import check_int8
from converters.tflite.versions import op_version
from converters.tgraph import TGraph

TENSOR_TYPES = {"float32": schema.TensorType.FLOAT32, "float16": schema.TensorType.FLOAT16,
                "int8": schema.TensorType.INT8, "uint8": schema.TensorType.UINT8,
                "int32": schema.TensorType.INT32, "int64": schema.TensorType.INT64,
                "bool": schema.TensorType.BOOL, "int16": schema.TensorType.INT16}
NP_TYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
            "int32": np.int32, "int64": np.int64, "bool": np.bool_, "int16": np.int16}
# The builtin-options union tag for an options object is its class name without the "T".
OPTION_TYPES = {name: getattr(schema.BuiltinOptions, name)
                for name in dir(schema.BuiltinOptions) if not name.startswith("_")}


def serialize(tg: TGraph, description: str = "ganglion", extra_outputs=()) -> bytes:
    """The .tflite bytes of ``tg``; ``extra_outputs`` (tensor indices) become graph outputs too
    (for range measurement)."""
    check_params(tg)
    check_int8(tg)
    model = schema.ModelT()
    model.version = 3
    model.description = description
    model.buffers = [schema.BufferT()]        # buffer 0: the empty sentinel
    opcodes: dict[tuple[str, int], int] = {}
    model.operatorCodes = []
    sub = schema.SubGraphT()
    sub.name = "main"
    sub.tensors = [_tensor(t, model.buffers) for t in tg.tensors]
    sub.inputs = list(tg.inputs)
    sub.outputs = list(tg.outputs) + [i for i in extra_outputs if i not in tg.outputs]
    sub.operators = [_operator(op, op_version(tg, op), opcodes, model.operatorCodes) for op in tg.ops]
    model.subgraphs = [sub]
    builder = flatbuffers.Builder(_size_hint(tg, model.buffers))
    cache: dict = {}
    for t in sub.tensors:
        if t.quantization is not None:
            t.quantization = _SharedQuant(t.quantization, cache)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(memoryview(builder.Bytes)[builder.Head():])    # one copy (Output() slices: two)


def _size_hint(tg: TGraph, buffers: list) -> int:
    """Builder bytes to start with: the constants plus a generous bound on everything else, so the
    builder never doubles (each doubling copies the whole buffer: 575 MB for VGG-19, issue 8)."""
    data = sum(b.data.nbytes + 16 for b in buffers[1:])
    meta = sum(len(t.name) + 128 + 16 * len(t.shape) + (12 * len(t.quant.scale) if t.quant else 0)
               for t in tg.tensors)
    return min(data + meta + 256 * len(tg.ops) + (1 << 16), flatbuffers.Builder.MAX_BUFFER_SIZE)


def _tensor(t, buffers) -> schema.TensorT:
    out = schema.TensorT()
    out.name = t.name
    out.shape = np.array(t.shape, np.int32)
    out.type = TENSOR_TYPES[t.dtype]
    out.buffer = 0
    if t.is_const:
        buffers.append(_RawBuffer(np.asarray(t.data, NP_TYPES[t.dtype])))
        out.buffer = len(buffers) - 1
    if t.quant is not None:
        q = schema.QuantizationParametersT()
        q.scale = [float(s) for s in t.quant.scale]
        q.zeroPoint = [int(z) for z in t.quant.zero_point]
        q.quantizedDimension = int(t.quant.axis)
        out.quantization = q
    return out


class _RawBuffer:
    """Stands in for a BufferT whose ``data`` is the tensor's array: ``Pack`` writes the same bytes
    as the object API (a ubyte vector, alignment 1, C order, little endian as this host) straight
    from the array into the builder, laying out a broadcast or transposed view on the way. The
    object API needs a uint8 copy and ``CreateNumpyVector`` makes two more (a byteswap for the
    endian-less uint8, then ``tobytes``): three copies of every weight (issue 8)."""

    def __init__(self, data: np.ndarray):
        self.data = data

    def Pack(self, builder) -> int:  # noqa: N802 (the object API's name)
        n = self.data.nbytes
        builder.StartVector(1, n, 1)
        builder.head = builder.head - n
        dest = np.frombuffer(builder.Bytes, np.uint8, count=n, offset=builder.head)
        dest.view(self.data.dtype).reshape(self.data.shape)[...] = self.data
        del dest                          # a live view would pin the bytearray's size
        builder.vectorNumElems = n
        data = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


class _SharedQuant:
    """Stands in for a QuantizationParametersT inside the object tree; its ``Pack`` looks the
    vectors and the table up in ``cache`` (keyed by their bytes) before writing them.

    Offsets written earlier are valid targets for any later table: the builder writes back to
    front, so earlier objects sit after the referencing table, as flatbuffers requires."""

    def __init__(self, q: schema.QuantizationParametersT, cache: dict):
        self.scale = np.asarray(q.scale, np.float32)
        self.zero_point = np.asarray(q.zeroPoint, np.int64)
        self.axis = int(q.quantizedDimension)
        self.cache = cache

    def _vector(self, builder, arr: np.ndarray) -> int:
        key = ("v", arr.dtype.str, arr.tobytes())
        if key not in self.cache:
            self.cache[key] = builder.CreateNumpyVector(arr)
        return self.cache[key]

    def Pack(self, builder) -> int:  # noqa: N802 (the object API's name)
        key = ("t", self.scale.tobytes(), self.zero_point.tobytes(), self.axis)
        if key in self.cache:
            return self.cache[key]
        scale = self._vector(builder, self.scale)
        zero_point = self._vector(builder, self.zero_point)
        schema.QuantizationParametersStart(builder)
        schema.QuantizationParametersAddScale(builder, scale)
        schema.QuantizationParametersAddZeroPoint(builder, zero_point)
        schema.QuantizationParametersAddQuantizedDimension(builder, self.axis)
        self.cache[key] = schema.QuantizationParametersEnd(builder)
        return self.cache[key]


def _operator(op, version: int, opcodes: dict[tuple[str, int], int], table: list) -> schema.OperatorT:
    """One OperatorCode per (op, version) pair: an int8 and a float CONV_2D are two entries, as
    the TFLite converter writes them (tflite/versions.py)."""
    key = (op.opcode, version)
    if key not in opcodes:
        code = schema.OperatorCodeT()
        value = getattr(schema.BuiltinOperator, op.opcode)
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        opcodes[key] = len(table)
        table.append(code)
    out = schema.OperatorT()
    out.opcodeIndex = opcodes[key]
    out.inputs = list(op.inputs)
    out.outputs = list(op.outputs)
    if op.options is not None:
        out.builtinOptionsType = OPTION_TYPES[type(op.options).__name__[:-1]]
        out.builtinOptions = op.options
    return out


def check_params(tg: TGraph) -> None:
    """Refuse parameters that LiteRT would accept but compute wrongly with."""
    problems = []
    for t in tg.tensors:
        if t.dtype in ("int8", "uint8", "int16") and t.quant is None:
            problems.append(f"{t.name}: {t.dtype} tensor without quantization parameters")
            continue
        if t.quant is None:
            continue
        scale, zp = t.quant.scale, t.quant.zero_point
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{t.name}: scale must be finite and > 0, got {scale[:4]}")
        lo, hi = {"int8": (-128, 127), "uint8": (0, 255)}.get(t.dtype, (-2**31, 2**31 - 1))
        if np.any(zp < lo) or np.any(zp > hi):
            problems.append(f"{t.name}: zero point out of {t.dtype} range")
        if t.is_const and t.dtype == "int8" and len(scale) > 1 and np.any(zp != 0):
            problems.append(f"{t.name}: per-channel weights must have zero point 0")
    if problems:
        raise ConvertError("internal error: invalid quantization parameters:\n  " + "\n  ".join(problems),
                           code="convert.internal", hint="please report this with the model")
