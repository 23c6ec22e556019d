"""The TFLite-level graph that lowering produces and the quantizer and writer consume.

One level below the ONNX IR: tensors are TFLite tensors (stored layout, TFLite dtype names,
optional quantization parameters) and ops are TFLite builtins with their ``*OptionsT`` object from
``ai_edge_litert.schema_py_generated``. Lowering emits float32; ``quantize`` rewrites dtypes and
parameters in place; ``writer`` serializes without further decisions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class QParams:
    scale: np.ndarray                 # float32, one per channel (or one)
    zero_point: np.ndarray            # int64, same length
    axis: int = 0                     # quantized dimension for per-channel params

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> "QParams":
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))


@dataclass
class TTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"            # float32 | float16 | int8 | uint8 | int32 | int64 | bool
    data: np.ndarray | None = None    # constants only
    quant: QParams | None = None
    perm: tuple[int, ...] | None = None  # stored = onnx_value.transpose(perm), for tensor_map

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class TOp:
    opcode: str                       # BuiltinOperator name, e.g. "CONV_2D"
    inputs: list[int]                 # -1 for an omitted optional input
    outputs: list[int]
    options: object | None = None     # a schema *OptionsT instance
    node: str = ""                    # the ONNX node it came from (for messages and keep_float)


@dataclass
class TGraph:
    tensors: list[TTensor] = field(default_factory=list)
    ops: list[TOp] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    # ONNX node -> converters.carried.ChannelGrid: an already-quantized model's own int8 weights,
    # which the weight quantizers keep (tflite/weights.per_channel_int8)
    carried: dict = field(default_factory=dict)

    def add(self, tensor: TTensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def consumers_of(self) -> dict[int, list[TOp]]:
        result: dict[int, list[TOp]] = {}
        for op in self.ops:
            for i in op.inputs:
                if i >= 0:
                    result.setdefault(i, []).append(op)
        return result
