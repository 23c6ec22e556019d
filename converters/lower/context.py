"""The lowering context: the bridge between the ONNX IR and the TFLite-level graph.

Lowerings ask it for the TFLite tensor that holds an IR value (``value``), for the tensor to write
a node's output into (``output``), for fresh constants and temporaries, and to ``emit`` ops. It
owns the layout bookkeeping: ``stored_shape`` and ``axis`` translate ONNX shapes and axes into the
layout chosen by the ``convert_layout`` pass, and constants are materialized already permuted.
"""
from __future__ import annotations

import ai_edge_litert.schema_py_generated as schema
import numpy as np

from converters.ir import Graph, Node
from converters.tgraph import TGraph, TOp, TTensor

ACTIVATIONS = {None: schema.ActivationFunctionType.NONE, "RELU": schema.ActivationFunctionType.RELU,
               "RELU6": schema.ActivationFunctionType.RELU6,
               "RELU_N1_TO_1": schema.ActivationFunctionType.RELU_N1_TO_1}

_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float32",
           np.dtype(np.float16): "float16", np.dtype(np.int64): "int64", np.dtype(np.int32): "int32",
           np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.bool_): "bool"}


def tflite_dtype(dtype) -> str:
    return _DTYPES.get(np.dtype(dtype), "float32") if dtype is not None else "float32"


def _narrowed(data: np.ndarray) -> np.ndarray:
    """float64 -> float32 and int64 -> int32: TFLite ops take float32 values and int32 indices
    and shapes."""
    if data.dtype == np.float64:
        return data.astype(np.float32)
    if data.dtype == np.int64:
        return data.astype(np.int32)
    return data


def laid_out(value: np.ndarray, dtype=None) -> np.ndarray:
    """``value`` C-contiguous, except a splat (every stride 0: a folded ConstantOfShape, Expand of a
    scalar): that stays a read-only broadcast view of one element until the writer lays it out, so
    an int8 weight never exists as float32 (VGG-19's fc6: 411 MB, issue 8)."""
    if value.ndim and value.size > 1 and not any(value.strides):
        return np.broadcast_to(np.asarray(value.flat[0], dtype or value.dtype), value.shape)
    return np.ascontiguousarray(value, dtype)


class LowerContext:
    def __init__(self, graph: Graph):
        self.g = graph
        self.t = TGraph()
        self.ids: dict[str, int] = {}
        self.node: Node | None = None   # the node being lowered (for op provenance)
        self.shared: dict[tuple, int] = {}   # (initializer, transform) -> the one constant made from it

    # -- layout helpers ---------------------------------------------------------------------------
    def perm(self, name: str) -> tuple[int, ...] | None:
        return self.g.tensors[name].perm

    def onnx_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.g.tensors[name].shape)

    def stored_shape(self, name: str) -> tuple[int, ...]:
        return self.g.tensors[name].backend_shape()

    def axis(self, name: str, onnx_axis: int) -> int:
        """Where ONNX axis ``onnx_axis`` of tensor ``name`` lives in the stored layout."""
        p = self.perm(name)
        return p.index(onnx_axis) if p else onnx_axis

    def stored(self, name: str) -> np.ndarray | None:
        """A constant's value in its stored layout, or None when not constant."""
        t = self.g.tensors[name]
        if t.data is None:
            return None
        return np.transpose(t.data, t.perm) if t.perm else t.data

    # -- tensors ----------------------------------------------------------------------------------
    def value(self, name: str) -> int:
        """The TFLite tensor holding IR value ``name`` (constants are created on first use)."""
        if name in self.ids:
            return self.ids[name]
        t = self.g.tensors[name]
        if t.data is not None:
            data = _narrowed(self.stored(name))
            idx = self.t.add(TTensor(name, tuple(data.shape), tflite_dtype(data.dtype),
                                     data=laid_out(data), perm=t.perm))
        else:
            idx = self.t.add(TTensor(name, self.stored_shape(name), tflite_dtype(t.dtype),
                                     perm=t.perm))
        self.ids[name] = idx
        return idx

    def output(self, name: str) -> int:
        return self.value(name)

    def const(self, value, hint: str, dtype=None) -> int:
        value = _narrowed(np.asarray(value, dtype=dtype))
        name = self.g.fresh(f"{self.node.name if self.node else 'const'}/{hint}")
        return self.t.add(TTensor(name, tuple(value.shape), tflite_dtype(value.dtype),
                                  data=laid_out(value)))

    def temp(self, shape, hint: str, dtype: str = "float32") -> int:
        name = self.g.fresh(f"{self.node.name if self.node else 'tmp'}/{hint}")
        return self.t.add(TTensor(name, tuple(int(s) for s in shape), dtype))

    def shape_of(self, idx: int) -> tuple[int, ...]:
        return self.t.tensors[idx].shape

    # -- ops --------------------------------------------------------------------------------------
    def emit(self, opcode: str, inputs: list[int], outputs: list[int], options=None) -> TOp:
        op = TOp(opcode, list(inputs), list(outputs), options, self.node.name if self.node else "")
        self.t.ops.append(op)
        return op

    def emit_new(self, opcode: str, inputs: list[int], shape, opts=None, hint: str = "t") -> int:
        """``emit`` into a new float temporary of ``shape``; returns it (for chains of ops)."""
        out = self.temp(shape, hint)
        self.emit(opcode, inputs, [out], opts)
        return out

    def activation(self, node: Node) -> int:
        return ACTIVATIONS[node.attrs.get("_activation")]

    def reshape(self, src: int, shape, out: int | None = None, hint: str = "reshape") -> int:
        """RESHAPE ``src`` to ``shape`` (into ``out`` or a new temporary)."""
        shape = [int(s) for s in shape]
        if out is None:
            out = self.temp(shape, hint, self.t.tensors[src].dtype)
        options = schema.ReshapeOptionsT()
        options.newShape = shape
        self.emit("RESHAPE", [src, self.const(np.array(shape, np.int32), "shape")], [out], options)
        return out

    def as_2d(self, src: int) -> int:
        """A 1-D channels-last [N, L, C] tensor as [N, 1, L, C]: TFLite convolves and pools in 2-D only."""
        n, length, c = self.shape_of(src)
        return self.reshape(src, [n, 1, length, c], hint="as_2d")


def options(name: str, **fields):
    """Build ``schema.<name>T()`` and set camelCase fields."""
    obj = getattr(schema, name + "T")()
    for key, value in fields.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{name} has no field {key}")
        setattr(obj, key, value)
    return obj
