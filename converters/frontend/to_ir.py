"""ONNX ModelProto -> converters.ir.Graph, with every attribute default filled in from the spec.

Defaults come from the op's own schema (``onnx.defs.get_schema`` at the model's opset), so a pass or
lowering reads ``node.attrs["strides"]`` and never repeats the spec's defaults. Constant nodes
become constant tensors. Opset quirks are normalized afterwards by ``quirks.normalize``.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.errors import ShapeError
from converters.frontend.load import default_opset
from converters.frontend import quantized
from converters.frontend.names import node_names
from converters.frontend.shapes import graph_inputs, static_shape
from converters.ir import Graph, Node, Tensor


def to_graph(model: onnx.ModelProto) -> Graph:
    """Build the IR. Shapes must already be inferred (``load_model`` does that)."""
    if quantized.is_quantized(model):   # a caller that skipped frontend.dequantize: its scales are dropped
        model, _ = quantized.dequantize(model)
    opset = default_opset(model)
    g = model.graph
    infos = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
    tensors: dict[str, Tensor] = {}
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        tensors[init.name] = Tensor(init.name, tuple(arr.shape), arr.dtype, data=arr)
    inputs = []
    for vi in graph_inputs(model):
        shape = static_shape(vi)
        if shape is None:
            raise ShapeError(f"input '{vi.name}' has no static shape", where=f"input '{vi.name}'",
                             hint=f"pass --input-shape {vi.name}=1,...")
        tensors[vi.name] = Tensor(vi.name, shape, _np_dtype(vi))
        inputs.append(vi.name)
    nodes = []
    # the names --keep-float takes and reports show (frontend/names.py: unnamed and repeated too)
    for name, proto in zip(node_names(g), g.node):
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            value = constant_value(proto)
            tensors[proto.output[0]] = Tensor(proto.output[0], tuple(value.shape), value.dtype,
                                              data=value)
            continue
        nodes.append(ir_node(proto, opset, name))
        add_outputs(tensors, proto, infos)
    outputs = [o.name for o in g.output]
    return Graph(nodes, tensors, inputs, outputs, opset, name=g.name or "graph")


def ir_node(proto: onnx.NodeProto, opset: int, name: str) -> Node:
    """The IR node of ``proto``: every attribute default of its schema at ``opset`` filled in."""
    attrs = _defaults(proto, opset)
    attrs.update({a.name: _attr_value(a) for a in proto.attribute})
    return Node(proto.op_type, name, list(proto.input), list(proto.output), attrs,
                proto.domain if proto.domain != "ai.onnx" else "")


def add_outputs(tensors: dict[str, Tensor], proto: onnx.NodeProto, infos: dict) -> None:
    """A tensor for each new output of ``proto``, with the static shape ``infos`` knows (or None)."""
    for out in proto.output:
        if out and out not in tensors:
            vi = infos.get(out)
            shape = static_shape(vi) if vi is not None else None
            tensors[out] = Tensor(out, shape, _np_dtype(vi) if vi is not None else None)


def _np_dtype(vi: onnx.ValueInfoProto):
    elem = vi.type.tensor_type.elem_type
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else None


def _defaults(proto: onnx.NodeProto, opset: int) -> dict:
    try:
        schema = onnx.defs.get_schema(proto.op_type, opset, proto.domain or "")
    except Exception:  # unknown op/domain: the unsupported-op check reports it later
        return {}
    out = {}
    for name, attr in schema.attributes.items():
        default = attr.default_value
        if default is not None and default.type != onnx.AttributeProto.UNDEFINED:
            out[name] = _attr_value(default)
    return out


def _attr_value(attr: onnx.AttributeProto):
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, list):
        return list(value)
    return value


def constant_value(proto: onnx.NodeProto) -> np.ndarray:
    attr = proto.attribute[0]
    value = _attr_value(attr)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    return np.asarray(value)

