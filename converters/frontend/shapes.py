"""Static shapes: fix symbolic input dimensions, run ONNX shape inference, demand static results.

TFLite (and int8 calibration) wants every shape known. A symbolic *batch* dimension (axis 0) is set
to 1; any other symbolic dimension needs an override (``--input-shape name=1,3,224,224``), and the
error names the input so the user knows which one to pin.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def fix_ceil_pool(node, graph) -> bool:
    """ceil_mode pooling drops a last window that would start in the end padding (the ONNX
    reference, onnxruntime and PyTorch agree), but ONNX shape inference for opsets <= 21 keeps it.
    Shrink such an output; True when it changed (everything computed from it must be re-inferred)."""
    if node.op not in ("MaxPool", "AveragePool") or not node.attrs.get("ceil_mode", 0):
        return False
    if node.attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return False
    x, y = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
    if x is None or y is None:
        return False
    n = len(x) - 2
    s = node.attrs.get("strides") or [1] * n
    p = node.attrs.get("pads") or [0] * (2 * n)
    new = list(y)
    for i in range(n):
        while new[2 + i] > 1 and (new[2 + i] - 1) * s[i] >= x[2 + i] + p[i]:
            new[2 + i] -= 1
    if new == list(y):
        return False
    graph.tensors[node.outputs[0]].shape = tuple(new)
    return True
