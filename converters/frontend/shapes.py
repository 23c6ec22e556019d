"""Static shapes: fix symbolic input dimensions, run ONNX shape inference, demand static results.

TFLite (and int8 calibration) wants every shape known. A symbolic *batch* dimension (axis 0) is set
to 1; any other symbolic dimension needs an override (``--input-shape name=1,3,224,224``), and the
error names the input so the user knows which one to pin.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from converters.errors import ShapeError

SHAPE_HINT = "pass the shape explicitly, e.g. --input-shape {name}={example}"


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def fix_input_shapes(model: onnx.ModelProto,
                     overrides: Mapping[str, Sequence[int]] | None = None) -> None:
    """Make every real graph input static, in place."""
    overrides = dict(overrides or {})
    names = {vi.name for vi in graph_inputs(model)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ShapeError(f"--input-shape names unknown input(s): {', '.join(unknown)}",
                         where="input shapes", hint=f"model inputs are: {', '.join(sorted(names))}")
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if vi.name in overrides:
            _apply_override(vi, list(overrides[vi.name]))
            continue
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis == 0:
                dim.Clear()
                dim.dim_value = 1
                continue
            example = ",".join(str(d.dim_value) if d.dim_value > 0 else "N" for d in dims)
            raise ShapeError(
                f"input '{vi.name}' has a dynamic dimension at axis {axis} "
                f"('{dim.dim_param or '?'}') that cannot be fixed automatically",
                where=f"input '{vi.name}'", hint=SHAPE_HINT.format(name=vi.name, example=example))
    # Stale inferred shapes with symbolic dims would fight the new static ones. A graph output
    # keeps its rank (each dim unknown): the checker requires the shape field of a main-graph
    # output, and an output inference cannot derive again (e.g. a Squeeze on computed axes)
    # would otherwise leave none, which the QDQ model then failed the checker on.
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            for dim in out.type.tensor_type.shape.dim:
                dim.Clear()


def _apply_override(vi: onnx.ValueInfoProto, shape: list[int]) -> None:
    dims = vi.type.tensor_type.shape.dim
    if dims and len(dims) != len(shape):
        raise ShapeError(f"input '{vi.name}' has rank {len(dims)} but the override has {len(shape)} dims",
                         where=f"input '{vi.name}'", hint="give one number per dimension")
    if any(int(d) <= 0 for d in shape):
        raise ShapeError(f"override for '{vi.name}' has non-positive dims {shape}",
                         where=f"input '{vi.name}'", hint="dimensions must be positive integers")
    for axis, size in enumerate(shape):
        dim = dims[axis]
        if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
            raise ShapeError(f"input '{vi.name}' axis {axis} is fixed to {dim.dim_value}, not {size}",
                             where=f"input '{vi.name}'", hint="only dynamic dims can be overridden")
    vi.type.tensor_type.ClearField("shape")
    for size in shape:
        vi.type.tensor_type.shape.dim.add().dim_value = int(size)


def infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation (folds Shape->Gather->Concat chains)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except Exception as exc:
        raise ShapeError(f"shape inference failed: {str(exc).splitlines()[0]}",
                         where="onnx.shape_inference",
                         hint="check input shapes (--input-shape) and the exporter") from exc


def static_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    """The static shape of a value, or None when any dim is unknown."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def complete_shapes(graph) -> bool:
    """Infer shapes ONNX's whole-model inference left unknown, one node at a time, now that
    constant folding has turned shape subgraphs into initializers (e.g. Reshape's target)."""
    from onnx import helper, numpy_helper

    from converters.passes.fold_constants import _proto_attrs

    changed = False
    for node in graph.nodes:
        outs = [graph.tensors[o] for o in node.outputs if o]
        if node.domain or all(t.shape is not None for t in outs):
            continue
        ins = [graph.tensors[i] for i in node.inputs if i]
        if any(t.shape is None or t.dtype is None for t in ins):
            continue
        inits = [numpy_helper.from_array(t.data, t.name) for t in ins if t.data is not None]
        infos = [helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(t.dtype),
                                               list(t.shape)) for t in ins if t.data is None]
        proto = helper.make_node(node.op, node.inputs, node.outputs, **_proto_attrs(node.attrs))
        g = helper.make_graph([proto], "one", infos, [helper.make_empty_tensor_value_info(o)
                                                        for o in node.outputs if o], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)])
        try:
            inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        except Exception:  # the shape stays unknown; problems_of() reports the node with a reason
            continue
        for vi in [*inferred.graph.output, *inferred.graph.value_info]:
            t = graph.tensors.get(vi.name)
            shape = static_shape(vi)
            if t is not None and t.shape is None and shape is not None:
                t.shape = shape
                t.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
                changed = True
    return changed


def fix_ceil_pools(graph) -> None:
    """ceil_mode pooling drops a last window that would start in the end padding (the ONNX
    reference, onnxruntime and PyTorch agree), but ONNX shape inference for opsets <= 21 keeps it.
    Shrink such outputs and re-infer everything downstream node by node."""
    dirty = set()
    for node in graph.nodes:
        if node.op not in ("MaxPool", "AveragePool") or not node.attrs.get("ceil_mode", 0):
            continue
        if node.attrs.get("auto_pad", "NOTSET") != "NOTSET":
            continue
        x, y = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
        if x is None or y is None:
            continue
        n = len(x) - 2
        s = node.attrs.get("strides") or [1] * n
        p = node.attrs.get("pads") or [0] * (2 * n)
        new = list(y)
        for i in range(n):
            while new[2 + i] > 1 and (new[2 + i] - 1) * s[i] >= x[2 + i] + p[i]:
                new[2 + i] -= 1
        if new != list(y):
            graph.tensors[node.outputs[0]].shape = tuple(new)
            dirty.add(node.outputs[0])
    if not dirty:
        return
    for node in graph.nodes:   # topological order: clear every shape computed from a fixed one
        if any(i in dirty for i in node.inputs):
            for o in node.outputs:
                if o and graph.tensors[o].data is None:
                    graph.tensors[o].shape = None
                    dirty.add(o)
    complete_shapes(graph)
