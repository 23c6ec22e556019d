"""The quantization parameters a TFLite build chose, read back from its flatbuffer by ONNX name.

The QDQ writer computes no parameters of its own: both targets run one compiler (frontend, IR
passes, lowering, ``converters.tflite.quantize``), which decides every activation's int8 scale
and zero point (ranges, tied groups, fixed LOGISTIC/SOFTMAX outputs, degenerate-range floors),
every weight's per-channel scale and every layer's bias correction. This module reads those
decisions out of the artifact the TFLite writer produced, so what the QDQ model carries is, by
construction, what the .tflite carries:

    activations  ONNX tensor -> (scale, int8 zero point); a float graph input or output takes
                 the parameters of the QUANTIZE / DEQUANTIZE next to it (float32 model I/O)
    layers       ONNX node -> its one op with weights (CONV_2D, DEPTHWISE_CONV_2D,
                 FULLY_CONNECTED, TRANSPOSE_CONV): per-output-channel weight scales and the
                 float bias it computes with (its int32 values times their scale, i.e. after
                 bias correction)

A node the lowering split into several layers (or merged) has no entry: the writer then
quantizes it with the same functions the TFLite quantizer uses (``params.py``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

import ai_edge_litert.schema_py_generated as schema
from converters.tflite.rules import WEIGHTS

_OP_NAMES = {getattr(schema.BuiltinOperator, n): n for n in dir(schema.BuiltinOperator) if not n.startswith("_")}
INT8, INT32 = schema.TensorType.INT8, schema.TensorType.INT32


@dataclass(frozen=True)
class Layer:
    opcode: str
    scales: np.ndarray              # float32, one per output channel
    bias: np.ndarray | None         # float64, the bias the int8 op adds (corrected), or None


@dataclass
class Shared:
    activations: dict[str, tuple[float, int]] = field(default_factory=dict)
    layers: dict[str, Layer] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)     # ONNX nodes that are (or own) a TFLite op


def read(flat: bytes, tensor_map: dict[str, dict], op_nodes: list[str]) -> Shared:
    """The parameters of the TFLite model ``flat`` (a ``TFLiteResult``'s flatbuffer, tensor_map
    and op_nodes) by ONNX tensor and node name."""
    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    sub = model.subgraphs[0]
    codes = [_OP_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]
    ops = [(codes[o.opcodeIndex], list(o.inputs), list(o.outputs)) for o in sub.operators]
    per_tensor = [_per_tensor(t) for t in sub.tensors]
    twin: dict[int, int] = {}            # float I/O tensor -> its int8 copy
    for opcode, ins, outs in ops:
        if opcode == "QUANTIZE" and per_tensor[ins[0]] is None:
            twin[ins[0]] = outs[0]
        elif opcode == "DEQUANTIZE" and per_tensor[outs[0]] is None:
            twin[outs[0]] = ins[0]
    shared = Shared(nodes=set(op_nodes))
    for name, entry in tensor_map.items():
        i = entry["index"]
        found = per_tensor[i] if per_tensor[i] is not None else per_tensor[twin.get(i, i)]
        if found is not None:
            shared.activations[name] = found
    layers_of = Counter(op_nodes[k] for k, (opcode, _, _) in enumerate(ops) if opcode in WEIGHTS and k < len(op_nodes))
    for k, (opcode, ins, _) in enumerate(ops):
        if opcode in WEIGHTS and k < len(op_nodes) and layers_of[op_nodes[k]] == 1:
            layer = _layer(model, sub, opcode, ins)
            if layer is not None:
                shared.layers[op_nodes[k]] = layer
    return shared


def _per_tensor(t) -> tuple[float, int] | None:
    q = t.quantization
    if t.type != INT8 or q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(np.float32(q.scale[0])), int(q.zeroPoint[0])


def _layer(model, sub, opcode: str, ins: list[int]) -> Layer | None:
    w_i, _, b_i = WEIGHTS[opcode]
    w = sub.tensors[ins[w_i]]
    q = w.quantization
    if w.type != INT8 or q is None or q.scale is None or not len(q.scale):
        return None                      # a float layer (kept float, or no int8 kernel)
    scales = np.asarray(q.scale, np.float32)
    bias = None
    if b_i < len(ins) and ins[b_i] >= 0:
        b = sub.tensors[ins[b_i]]
        data = model.buffers[b.buffer].data
        if b.type == INT32 and data is not None and b.quantization is not None:
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.int32).astype(np.float64)
            bias = values * np.asarray(b.quantization.scale, np.float64)
    return Layer(opcode, scales, bias)
