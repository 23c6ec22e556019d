"""Static shapes: fix symbolic input dimensions, run ONNX shape inference, demand static results.

TFLite (and int8 calibration) wants every shape known. A symbolic *batch* dimension (axis 0) is set
to 1, a ``dim_param`` shared by several inputs takes one size, and a dim nothing names may be read
off the output it is fed back from (``fix_input_shapes``); any other symbolic dimension needs an
override (``--input-shape name=1,3,224,224``, or calibration data that fixes it:
``calibrate.data.shapes_from_data``), and the error names the input so the user knows which one to pin.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import onnx

from converters.errors import ShapeError

SHAPE_HINT = "pass the shape explicitly, e.g. --input-shape {name}={example}"


class PinnedShapeWarning(UserWarning):
    """An input's dynamic dims were pinned from something other than --input-shape (named in the text)."""


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def fix_input_shapes(model: onnx.ModelProto,
                     overrides: Mapping[str, Sequence[int]] | None = None) -> None:
    """Make every real graph input static, in place.

    A dynamic dimension takes, in order: the override of its input; the size its ``dim_param``
    got elsewhere (an override, or 1 at another input's batch axis: silero VAD's ``state``
    [2, batch, 128] follows ``input`` [batch, sequence]); 1 at axis 0; the size shape inference
    gives the graph output it would be fed back from (``_pin_from_outputs``). Else a ShapeError."""
    overrides = dict(overrides or {})
    names = {vi.name for vi in graph_inputs(model)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ShapeError(f"--input-shape names unknown input(s): {', '.join(unknown)}",
                         where="input shapes", hint=f"model inputs are: {', '.join(sorted(names))}")
    named = _named_sizes(graph_inputs(model), overrides)
    unresolved: list[tuple[onnx.ValueInfoProto, int]] = []
    for vi in graph_inputs(model):
        if vi.name in overrides:
            _apply_override(vi, list(overrides[vi.name]))
            continue
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            size = named.get(dim.dim_param)
            if size is None and axis == 0:
                size = 1
            if size is None and dim.HasField("dim_value"):
                raise _cannot_fix(vi, axis)     # an explicit 0 (an empty tensor) is no unknown to guess
            if size is None:
                unresolved.append((vi, axis))
                continue
            dim.Clear()
            dim.dim_value = size
    if unresolved:
        _pin_from_outputs(model, unresolved)
    # Stale inferred shapes with symbolic dims would fight the new static ones. A graph output
    # keeps its rank (each dim unknown): the checker requires the shape field of a main-graph
    # output, and an output inference cannot derive again (e.g. a Squeeze on computed axes)
    # would otherwise leave none, which the QDQ model then failed the checker on.
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            for dim in out.type.tensor_type.shape.dim:
                dim.Clear()


def _named_sizes(inputs: list[onnx.ValueInfoProto], overrides: Mapping) -> dict[str, int]:
    """{dim_param: size}: from the overrides, then 1 for a batch axis (0) not pinned otherwise.
    ONNX gives one dim_param one size in a run, so two overrides that disagree are refused."""
    named: dict[str, int] = {}
    shared = _shared_params(inputs)
    for vi in inputs:
        dims = vi.type.tensor_type.shape.dim
        shape = overrides.get(vi.name)
        if shape is None or len(shape) != len(dims):
            continue                  # (a rank mismatch is _apply_override's error)
        for dim, size in zip(dims, shape):
            if dim.dim_param not in shared:
                continue
            if named.setdefault(dim.dim_param, int(size)) != int(size):
                raise ShapeError(f"dimension '{dim.dim_param}' is pinned to both {named[dim.dim_param]} and "
                                 f"{int(size)} (input '{vi.name}')", where=f"input '{vi.name}'",
                                 hint=f"inputs that share '{dim.dim_param}' take one size: make the "
                                      "--input-shape values agree")
    for vi in inputs:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in overrides and dims and dims[0].dim_param in shared:
            named.setdefault(dims[0].dim_param, 1)
    return named


def _shared_params(inputs: list[onnx.ValueInfoProto]) -> set[str]:
    """The dim_params that name one dimension: not an exporter's placeholder for "unknown" (paddle2onnx
    writes '?' for every dynamic dim of ``x`` [?, 3, ?, ?]), i.e. not '?' and not repeated within
    one input's shape."""
    names: set[str] = set()
    placeholders = {"?"}
    for vi in inputs:
        params = [d.dim_param for d in vi.type.tensor_type.shape.dim if d.dim_param and not d.HasField("dim_value")]
        placeholders |= {p for p in params if params.count(p) > 1}
        names |= set(params)
    return names - placeholders


def _pin_from_outputs(model: onnx.ModelProto, unresolved: list[tuple[onnx.ValueInfoProto, int]]) -> None:
    """Pin the dims nothing names in a state input (silero VAD's ``state`` [2, ?, 128]), read off
    the graph output of its rank that it is fed back from (a ShapeError naming the input when
    there is none, or several that disagree): for one unknown dim, that output's shape when
    shape inference makes it static with everything else pinned; else, for a recurrent state
    [layers, ?, hidden] (``_rnn_state``, https://onnx.ai/onnx/operators/onnx__LSTM.html) beside an
    output of that rank whose fixed dims agree, the batch size the other inputs have (an If on
    the state's shape, as silero's, stops inference). A PinnedShapeWarning says what was chosen."""
    outputs = _inferred_outputs(model)
    inputs = graph_inputs(model)
    for vi in {id(vi): vi for vi, _ in unresolved}.values():
        dims = vi.type.tensor_type.shape.dim
        fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        agree = [s for s in outputs if len(s) == len(fixed)
                 and all(f is None or g is None or f == g for f, g in zip(fixed, s))]
        static = {s for s in agree if None not in s}
        batch = {d[0].dim_value for d in (v.type.tensor_type.shape.dim for v in inputs if v is not vi)
                 if d and d[0].dim_value > 0}
        if fixed.count(None) == 1 and len(static) == 1:
            shape = static.pop()
        elif agree and not static and _rnn_state(fixed) and len(batch) == 1:
            shape = tuple(batch.pop() if f is None else f for f in fixed)
        else:
            raise _cannot_fix(vi, fixed.index(None))
        warnings.warn(f"input '{vi.name}' is pinned to {list(shape)}, like the output of its rank it is fed back "
                      "from (pass --input-shape to choose another)", PinnedShapeWarning, stacklevel=4)
        for dim, size in zip(dims, shape):
            dim.Clear()
            dim.dim_value = size


def _cannot_fix(vi: onnx.ValueInfoProto, axis: int) -> ShapeError:
    dims = vi.type.tensor_type.shape.dim
    example = ",".join(str(d.dim_value) if d.dim_value > 0 else "N" for d in dims)
    return ShapeError(f"input '{vi.name}' has a dynamic dimension at axis {axis} "
                      f"('{dims[axis].dim_param or '?'}') that cannot be fixed automatically",
                      where=f"input '{vi.name}'", hint=SHAPE_HINT.format(name=vi.name, example=example))


def _rnn_state(fixed: list[int | None]) -> bool:
    """[layers, ?, hidden]: the state layout of ONNX LSTM/GRU/RNN, its one unknown the batch. A
    token input [1, ?] beside logits [1, ?] must not get this guess: its unknown is a length."""
    return len(fixed) == 3 and fixed[1] is None and None not in (fixed[0], fixed[2])


def _inferred_outputs(model: onnx.ModelProto) -> list[tuple[int | None, ...]]:
    """The graph outputs' shapes (None for an unknown dim) as inference gives them, for a copy of
    ``model`` with its stale output shapes forgotten; a rank the model declares is kept."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    del probe.graph.value_info[:]
    declared = [len(o.type.tensor_type.shape.dim) if o.type.tensor_type.HasField("shape") else None
                for o in probe.graph.output]
    for out in probe.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        inferred = list(onnx.shape_inference.infer_shapes(probe, data_prop=True).graph.output)
    except Exception:             # noqa: BLE001 (no inference: the declared ranks only)
        inferred = [None] * len(declared)
    found = []
    for out, rank in zip(inferred, declared):
        tt = out.type.tensor_type if out is not None else None
        if tt is not None and tt.HasField("shape"):
            found.append(tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                               for d in tt.shape.dim))
        elif rank is not None:
            found.append((None,) * rank)
    return found


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
