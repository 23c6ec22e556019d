"""Opset quirks, normalized once so passes and lowerings see one form per op.

After ``normalize``: inputs that ONNX moved from attributes to tensors across opsets (Squeeze axes,
Reduce axes, Split sizes, Clip bounds, Pad pads, Slice starts/ends) are plain attributes again;
axes are non-negative; ``auto_pad`` is resolved into explicit ``pads``; legacy (opset < 13) 2-D
coerced Softmax is rewritten with Reshapes. A value that must be constant but is not is recorded in
``attrs["_unresolved"]`` and reported by the unsupported-op check together with everything else.
"""
from __future__ import annotations

import math

import numpy as np

from converters.geometry import auto_pads
from converters.ir import Graph, Node, Tensor

QUIRKS = {}


def quirk(*ops):
    def register(fn):
        for op in ops:
            QUIRKS[op] = fn
        return fn
    return register


def normalize(graph: Graph) -> None:
    """Apply each node's quirk. Every quirk reads static shapes: a node with an unknown one is
    recorded as ``_unresolved`` (reported with every other problem) instead of normalized."""
    for node in list(graph.nodes):
        fn = QUIRKS.get(node.op) if node.domain == "" else None
        if fn is None:
            continue
        unknown = [t for t in (*node.inputs, *node.outputs) if t and graph.tensors[t].shape is None]
        if unknown:
            node.attrs["_unresolved"] = f"no static shape for {', '.join(unknown)}"
            continue
        fn(node, graph)


def _rank(graph: Graph, name: str) -> int:
    shape = graph.tensors[name].shape
    return len(shape) if shape is not None else 0


def _axes(axes, rank: int) -> list[int]:
    return sorted(int(a) % rank if rank else int(a) for a in axes)


def _const_input(node: Node, graph: Graph, index: int, what: str):
    """(found, value) for an optional constant input; marks the node unresolved if not constant."""
    name = node.input(index)
    if not name:
        return False, None
    value = graph.const(name)
    if value is None:
        node.attrs["_unresolved"] = f"{what} (input {index}) must be a constant"
        return False, None
    return True, value


@quirk("Conv", "ConvTranspose", "MaxPool", "AveragePool")
def _spatial(node: Node, graph: Graph) -> None:
    x = graph.tensors[node.inputs[0]].shape
    y = graph.tensors[node.outputs[0]].shape
    if x is None or y is None:
        return
    n = len(x) - 2
    if "kernel_shape" not in node.attrs and node.op in ("Conv", "ConvTranspose"):
        node.attrs["kernel_shape"] = list(graph.tensors[node.inputs[1]].shape[2:])
    k = list(node.attrs["kernel_shape"])
    s = list(node.attrs.get("strides") or [1] * n)
    d = list(node.attrs.get("dilations") or [1] * n)
    pads = list(node.attrs.get("pads") or [0] * (2 * n))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if node.op == "ConvTranspose":
        pads = _transpose_pads(node, x, y, k, s, d, pads, auto)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = auto_pads(auto, x[2:], k, s, d)
    elif auto == "VALID":
        pads = [0] * (2 * n)
    node.attrs.update(kernel_shape=k, strides=s, dilations=d, pads=pads, auto_pad="NOTSET")


def _transpose_pads(node, x, y, k, s, d, pads, auto):
    n = len(k)
    outpad = list(node.attrs.get("output_padding") or [0] * n)
    node.attrs["output_padding"] = outpad
    if auto == "NOTSET" and not node.attrs.get("output_shape"):
        return pads
    pads = [0] * (2 * n)
    for i in range(n):
        total = s[i] * (x[2 + i] - 1) + outpad[i] + (k[i] - 1) * d[i] + 1 - y[2 + i]
        if total < 0:   # output_shape larger than the full result: zero-extend at the end
            outpad[i] -= total
            continue
        small = total // 2
        # ONNX spec (and onnxruntime): only SAME_UPPER puts the larger half at the end; SAME_LOWER
        # and an explicit output_shape put it at the start.
        pads[i], pads[n + i] = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
    return pads


@quirk("Clip")
def _clip(node: Node, graph: Graph) -> None:
    if any(name and graph.const(name) is None for name in node.inputs[1:3]):
        _clip_by_tensors(node, graph)
        return
    found_lo, lo = _const_input(node, graph, 1, "Clip min")
    found_hi, hi = _const_input(node, graph, 2, "Clip max")
    node.attrs["min"] = float(lo) if found_lo else node.attrs.get("min", -math.inf)
    node.attrs["max"] = float(hi) if found_hi else node.attrs.get("max", math.inf)
    if "_unresolved" not in node.attrs:
        node.inputs = node.inputs[:1]


def _clip_by_tensors(node: Node, graph: Graph) -> None:
    """A Clip bound computed at run time (librosa's power_to_db floor ``max(x, x.max() - top_db)``,
    torchlibrosa's export) becomes Max(x, min) then Min(., max): ONNX Clip is exactly
    ``min(max(x, lo), hi)``, also when lo > hi (https://onnx.ai/onnx/operators/onnx__Clip.html)."""
    x, lo, hi = node.inputs[0], node.input(1), node.input(2)
    lo, hi = ("" if _unbounded(graph, b) else b for b in (lo, hi))     # torch writes clamp(min=t) with max=inf
    out = node.outputs[0]
    steps, cur = [], x
    for op, bound in (("Max", lo), ("Min", hi)):
        if not bound:
            continue
        is_last = op == "Min" or not hi
        dest = out if is_last else graph.fresh(f"{node.name}/max")
        if not is_last:
            graph.tensors[dest] = Tensor(dest, graph.tensors[out].shape, graph.tensors[out].dtype)
        steps.append(Node(op, f"{node.name}/{op.lower()}", [cur, bound], [dest]))
        cur = dest
    at = graph.nodes.index(node)
    graph.nodes[at:at + 1] = steps


def _unbounded(graph: Graph, name: str) -> bool:
    value = graph.const(name) if name else None
    return value is not None and value.size == 1 and math.isinf(float(value.reshape(-1)[0]))


@quirk("Squeeze", "Unsqueeze")
def _squeeze(node: Node, graph: Graph) -> None:
    found, axes = _const_input(node, graph, 1, "axes")
    if "_unresolved" in node.attrs:
        return
    axes = list(axes) if found else node.attrs.get("axes")
    x_shape = graph.tensors[node.inputs[0]].shape
    if node.op == "Squeeze":
        if axes is None:
            axes = [i for i, size in enumerate(x_shape or ()) if size == 1]
        node.attrs["axes"] = _axes(axes, _rank(graph, node.inputs[0]))
    else:
        node.attrs["axes"] = _axes(axes, _rank(graph, node.outputs[0]))
    node.inputs = node.inputs[:1]


@quirk("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceSumSquare", "ReduceL2",
       "ReduceL1")
def _reduce(node: Node, graph: Graph) -> None:
    found, axes = _const_input(node, graph, 1, "axes")
    if "_unresolved" in node.attrs:
        return
    axes = list(axes) if found else node.attrs.get("axes")
    rank = _rank(graph, node.inputs[0])
    if not axes:
        axes = [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    node.attrs["axes"] = _axes(axes, rank)
    node.inputs = node.inputs[:1]


@quirk("Split")
def _split(node: Node, graph: Graph) -> None:
    rank = _rank(graph, node.inputs[0])
    axis = int(node.attrs.get("axis", 0)) % rank
    node.attrs["axis"] = axis
    node.attrs["split"] = [graph.tensors[o].shape[axis] for o in node.outputs]
    node.inputs = node.inputs[:1]


@quirk("Pad")
def _pad(node: Node, graph: Graph) -> None:
    found, pads = _const_input(node, graph, 1, "pads")
    _, value = _const_input(node, graph, 2, "constant_value")
    found_axes, axes = _const_input(node, graph, 3, "axes")
    if "_unresolved" in node.attrs:
        return
    rank = _rank(graph, node.inputs[0])
    pads = [int(p) for p in (pads if found else node.attrs.get("pads", [0] * 2 * rank))]
    axes = _axes(axes, rank) if found_axes else list(range(rank))
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[len(axes) + i]
    node.attrs["pads"] = full
    node.attrs["value"] = float(np.asarray(value).reshape(-1)[0]) if value is not None else float(
        node.attrs.get("value", 0.0))
    node.inputs = node.inputs[:1]


@quirk("Slice")
def _slice(node: Node, graph: Graph) -> None:
    values = [_const_input(node, graph, i, what) for i, what in
              ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
    if "_unresolved" in node.attrs:
        return
    shape = graph.tensors[node.inputs[0]].shape
    rank = len(shape)
    starts, ends = values[0][1], values[1][1]
    axes = values[2][1] if values[2][0] else range(len(starts))
    steps = values[3][1] if values[3][0] else [1] * len(starts)
    begin, end, step = [0] * rank, list(shape), [1] * rank
    for a, st, en, sp in zip(axes, starts, ends, steps):
        a = int(a) % rank
        # Python's slice semantics clamp exactly like ONNX Slice.
        b, e, p = slice(int(max(min(st, 2**62), -2**62)), int(max(min(en, 2**62), -2**62)),
                        int(sp)).indices(shape[a])
        begin[a], end[a], step[a] = b, e, p
    node.attrs.update(begin=begin, end=end, step=step)
    node.inputs = node.inputs[:1]


@quirk("Reshape", "Resize", "Dropout")
def _first_input_only(node: Node, graph: Graph) -> None:
    # Output shapes are static after inference; the shape/scales/ratio inputs are not needed,
    # except to notice what cannot be expressed (training-mode Dropout, Resize's own scales).
    if node.op == "Dropout":
        found, training = _const_input(node, graph, 2, "training_mode")
        _, ratio = _const_input(node, graph, 1, "ratio")
        node.attrs.pop("_unresolved", None)
        identity = ratio is not None and float(np.asarray(ratio).reshape(-1)[0]) == 0.0
        if node.input(2) and not identity and (not found or bool(np.asarray(training).reshape(-1)[0])):
            node.attrs["_unresolved"] = "training-mode Dropout is random; export in eval mode"
            node.attrs["_training"] = True
        mask = node.outputs[1] if len(node.outputs) > 1 else ""
        # opset <= 11 exporters (and version_converter) name the mask even when nothing reads it:
        # an unread mask is simply dropped; a read one is refused (spec: all-true only in eval mode)
        if mask and (mask in graph.outputs or graph.consumers().get(mask)):
            node.attrs["_unresolved"] = "Dropout mask output is not supported"
            node.attrs["_training"] = True
        node.outputs = node.outputs[:1]
    if node.op == "Resize" and node.input(2):
        found, scales = _const_input(node, graph, 2, "scales")
        if found and np.asarray(scales).size:
            values = [float(v) for v in np.asarray(scales).reshape(-1)]
            rank = _rank(graph, node.inputs[0])
            axes = node.attrs.get("axes") or list(range(rank))   # opset 18: scales per listed axis
            full = [1.0] * rank
            for a, v in zip(axes, values):
                full[int(a) % rank] = v
            node.attrs["_scales"] = full
    node.inputs = node.inputs[:1]


@quirk("Concat", "Flatten", "Gather", "LayerNormalization", "Softmax", "LogSoftmax")
def _axis(node: Node, graph: Graph) -> None:
    rank = _rank(graph, node.inputs[0])
    axis = int(node.attrs.get("axis", 0))
    if node.op == "Flatten":
        node.attrs["axis"] = axis % (rank + 1) if axis < 0 else axis
        return
    node.attrs["axis"] = axis % rank if rank else 0
    if node.op in ("Softmax", "LogSoftmax") and graph.opset < 13 and node.attrs["axis"] != rank - 1:
        _legacy_softmax(node, graph, rank)


def _legacy_softmax(node: Node, graph: Graph, rank: int) -> None:
    """Opset < 13 Softmax coerces to 2-D at ``axis``: express that with Reshapes."""
    shape = graph.tensors[node.inputs[0]].shape
    axis = node.attrs["axis"]
    flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    x2 = graph.fresh(node.inputs[0] + "_2d")
    y2 = graph.fresh(node.outputs[0] + "_2d")
    dtype = graph.tensors[node.inputs[0]].dtype
    graph.tensors[x2] = Tensor(x2, flat, dtype)
    graph.tensors[y2] = Tensor(y2, flat, dtype)
    before = Node("Reshape", graph.fresh(node.name + "_flatten"), [node.inputs[0]], [x2])
    after = Node("Reshape", graph.fresh(node.name + "_unflatten"), [y2], [node.outputs[0]])
    at = graph.nodes.index(node)
    node.inputs, node.outputs, node.attrs["axis"] = [x2], [y2], 1
    graph.nodes[at:at + 1] = [before, node, after]


@quirk("Transpose")
def _transpose(node: Node, graph: Graph) -> None:
    if not node.attrs.get("perm"):
        node.attrs["perm"] = list(reversed(range(_rank(graph, node.inputs[0]))))
