"""One IR node as a one-node ONNX model at the graph's opset: evaluate it, or infer its shapes.

Both the frontend's fixed-point folding (``fold.py``) and the ``fold_constants`` pass go through
here. A node is always judged at the *model's* opset (``Graph.opset``): a bare ``NodeProto`` given
to ``onnx.reference.ReferenceEvaluator`` or to shape inference is read at the newest opset, where
an opset-12 ``Unsqueeze(axes=[0])`` or ``Squeeze`` attribute is invalid (axes became an input at
opset 13, https://onnx.ai/onnx/operators/onnx__Unsqueeze.html), and folding silently stopped.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from converters.frontend.shapes import static_shape
from converters.ir import Graph, Node

# Ops that must not be folded even with constant inputs (non-deterministic or stateful).
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli"}
MAX_FOLD_ELEMENTS = 64 * 1024 * 1024
DATA_PROP_ELEMENTS = 4096   # constants shape inference may read as data (shapes, axes); weights are not


def proto_attrs(attrs: dict) -> dict:
    """IR attributes as ``helper.make_node`` keywords (private ``_keys`` dropped)."""
    out = {}
    for key, value in attrs.items():
        if key.startswith("_"):
            continue
        out[key] = numpy_helper.from_array(value) if isinstance(value, np.ndarray) else value
    return out


def one_node_model(node: Node, graph: Graph, *, constants: bool) -> onnx.ModelProto:
    """``node`` alone in a model that imports ``graph.opset``. ``constants``: small constant inputs
    are initializers (for shape inference's data propagation) rather than graph inputs."""
    proto = helper.make_node(node.op, node.inputs, node.outputs, name=node.name, **proto_attrs(node.attrs))
    inits, infos, seen = [], [], set()
    for name in node.inputs:
        if not name or name in seen:
            continue
        seen.add(name)
        t = graph.tensors[name]
        if constants and t.data is not None and t.data.size <= DATA_PROP_ELEMENTS:
            inits.append(numpy_helper.from_array(np.asarray(t.data), name))
            continue
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
        infos.append(helper.make_tensor_value_info(name, elem, list(t.shape) if t.shape is not None else None))
    outs = [helper.make_empty_tensor_value_info(o) for o in node.outputs if o]
    g = helper.make_graph([proto], "one", infos, outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)])


def evaluate(node: Node, graph: Graph) -> list[np.ndarray] | None:
    """The node's outputs when all its inputs are constant (or it is Shape/Size of a static
    tensor), else None. A node that fails to evaluate is left alone: the unsupported-op check or
    its lowering reports it with a typed error."""
    if node.domain not in ("", "ai.onnx") or node.op in NEVER_FOLD or "_unresolved" in node.attrs:
        return None
    if node.op in ("Shape", "Size"):
        return _shape_of(node, graph)
    if node.op == "ConstantOfShape" and graph.const(node.inputs[0]) is not None:
        return [splat(node.attrs.get("value"), graph.const(node.inputs[0]))]
    names = [i for i in node.inputs if i]
    if not names or any(graph.const(i) is None for i in names):
        return None
    try:
        feeds = {i: np.asarray(graph.const(i)) for i in names}
        results = ReferenceEvaluator(one_node_model(node, graph, constants=False)).run(None, feeds)
    except Exception:  # the reference raises anything (NotImplementedError, ValueError, ...)
        return None
    results = [np.asarray(r) for r in results]
    big = max(stored_size(r) for r in results) if results else 0
    if big > MAX_FOLD_ELEMENTS:   # say why instead of "not supported" (and skip it next sweep)
        node.attrs["_unresolved"] = (f"folds to a constant of {big:,} elements, over the "
                                     f"{MAX_FOLD_ELEMENTS:,}-element limit of the converter's memory")
        return None
    return results


def splat(value, shape) -> np.ndarray:
    """ConstantOfShape's output (https://onnx.ai/onnx/operators/onnx__ConstantOfShape.html: a
    one-element ``value``, default float32 0) as a read-only broadcast view: one element in memory
    however large the shape (VGG-19's test copy builds its 103M-element fc6 weight this way)."""
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.broadcast_to(value[:1].reshape(()), tuple(int(d) for d in np.asarray(shape).reshape(-1)))


def stored_size(array: np.ndarray) -> int:
    """Elements ``array`` holds in memory: 1 for a splat (every stride 0), else its size."""
    return 1 if array.size and not any(array.strides) else array.size


def _shape_of(node: Node, graph: Graph):
    shape = graph.tensors[node.inputs[0]].shape
    if shape is None:
        return None
    if node.op == "Size":
        return [np.asarray(int(np.prod(shape)), dtype=np.int64)]
    rank = len(shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    return [np.asarray(shape[slice(start, end)], dtype=np.int64)]


def infer_shapes(node: Node, graph: Graph) -> bool:
    """Fill the unknown output shapes of ``node`` by ONNX shape inference of the node alone (with
    its constant inputs as data); True when something was filled."""
    outs = [graph.tensors[o] for o in node.outputs if o]
    if node.domain or all(t.shape is not None for t in outs):
        return False
    ins = [graph.tensors[i] for i in node.inputs if i]
    if any(t.shape is None or t.dtype is None for t in ins):
        return False
    try:
        inferred = onnx.shape_inference.infer_shapes(one_node_model(node, graph, constants=True),
                                                     strict_mode=True, data_prop=True)
    except Exception:  # the shape stays unknown; problems_of() reports the node with a reason
        return False
    changed = False
    for vi in [*inferred.graph.output, *inferred.graph.value_info]:
        t = graph.tensors.get(vi.name)
        shape = static_shape(vi)
        if t is not None and t.shape is None and shape is not None:
            t.shape = shape
            t.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            changed = True
    return changed
