"""Which outputs hold class scores: where top-1 agreement and accuracy mean something.

Top-1 (the argmax over a class axis) is a classifier's metric. Taken over a detector's
``[1, 84, 8400]`` head it compares box coordinates with class scores, and over a recurrent state
it compares hidden units: numbers that look like fidelity and mean nothing. So each output gets a
class axis only when the node that makes it says so, read from the float reference graph:

    Softmax / LogSoftmax          its ``axis`` (class probabilities)
    Gemm, MatMul (+ bias Add)     the last axis (logits of a linear classifier or a sequence head)
    Conv / ConvTranspose / Resize the channel axis of a 4-D map (per-pixel classes: segmentation)
    Concat                        none: branches joined together (a detector's boxes and scores)
    anything else                 none (Sigmoid: independent scores; Tanh: a state; ...)

and none when that axis has a single element. ``--class-axis`` overrides it: ``AXIS`` for every
output, ``OUTPUT=AXIS`` for one, ``OUTPUT=none`` to turn top-1 off. Shape-only ops between the
deciding node and the output are followed: Identity and Cast keep the axis, Transpose moves it
by its ``perm``, and Flatten, Squeeze, Unsqueeze, Reshape keep it only when it stays the last axis
whole (else n/a), so the answer stays right or says n/a.
"""
from __future__ import annotations

import onnx
from onnx import helper

from converters.verify.metrics import VerifyInputError

LINEAR = ("Gemm", "MatMul", "Add")
MAPS = ("Conv", "ConvTranspose", "Resize")
PASS_THROUGH = ("Identity", "Cast", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Reshape")   # walked back


def output_axes(model: onnx.ModelProto, overrides: dict | None = None) -> dict[str, tuple[int | None, str]]:
    """{output: (class axis or None, why)} for every graph output of the float ``model``."""
    overrides = dict(overrides or {})
    names = [o.name for o in model.graph.output]
    unknown = sorted(set(overrides) - set(names) - {"*"})
    if unknown:
        raise VerifyInputError(f"--class-axis names unknown output(s) {unknown}",
                               hint=f"the model's outputs are {names}")
    shapes = _shapes(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    found = {}
    for name in names:
        rank = len(shapes.get(name, ()))
        if name in overrides or "*" in overrides:
            axis = overrides.get(name, overrides.get("*"))
            found[name] = (_normal(axis, rank, name), "--class-axis") if axis is not None else \
                (None, "turned off by --class-axis")
            continue
        axis, why = _from_graph(name, producer, shapes, _opset(model))
        if axis is not None and shapes.get(name, (0,))[axis] == 1:
            axis, why = None, f"its class axis {axis} has one element"
        found[name] = (axis, why)
    return found


def _normal(axis: int, rank: int, name: str) -> int:
    if rank and not -rank <= axis < rank:
        raise VerifyInputError(f"--class-axis {axis} is out of range for output {name!r} of rank {rank}",
                               hint=f"use an axis in [-{rank}, {rank - 1}]")
    return axis % rank if rank else axis


def _from_graph(name: str, producer: dict, shapes: dict, opset: int) -> tuple[int | None, str]:
    """(axis, why) read off the nodes that make output ``name`` (see the module doc): the deciding
    node's class axis, carried forward through the layout ops between it and the output."""
    chain, tensor = [], name
    node = producer.get(tensor)
    while node is not None and node.op_type in PASS_THROUGH:
        chain.append(node)
        tensor = node.input[0]
        node = producer.get(tensor)
    if node is None:
        return None, "it is not computed by a layer"
    axis, why = _decide(node, len(shapes.get(tensor, ())), producer, opset)
    for step in reversed(chain):
        if axis is None:
            break
        axis = _carry(step, axis, shapes)
        if axis is None:
            why = f"{step.op_type} after the {node.op_type} moves its class axis (name it with --class-axis)"
    return axis, why


def _decide(node, rank: int, producer: dict, opset: int) -> tuple[int | None, str]:
    """The class axis of ``node``'s output (of rank ``rank``), from what the node is."""
    op = node.op_type
    if op in ("Softmax", "LogSoftmax"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = attrs.get("axis", -1 if opset >= 13 else 1)
        return (axis % rank if rank else axis), f"{op} over axis {axis}"
    if op in LINEAR and rank >= 2 and (op != "Add" or _after_matmul(node, producer)):
        return rank - 1, f"{op} logits (last axis)"
    if op in MAPS and rank == 4:
        return 1, f"{op} map: classes per pixel (channel axis)"
    if op == "Concat":
        return None, "Concat of several branches (a detector head?): name the class axis with --class-axis"
    return None, f"made by {op}, not class scores"


def _carry(node, axis: int, shapes: dict) -> int | None:
    """``axis`` of ``node``'s input as an axis of its output; None when the node moves it away."""
    if node.op_type in ("Identity", "Cast"):
        return axis
    before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not before or not after:
        return None
    if node.op_type == "Transpose":
        perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"),
                    list(range(len(before)))[::-1])
        return perm.index(axis % len(before))
    # Flatten / Squeeze / Unsqueeze / Reshape: followed only when the class axis stays last, whole
    if axis % len(before) == len(before) - 1 and before[-1] == after[-1]:
        return len(after) - 1
    return None


def _after_matmul(node, producer: dict) -> bool:
    return any(producer.get(i) is not None and producer[i].op_type in ("MatMul", "Gemm") for i in node.input)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    infos = list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    return {vi.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
            for vi in infos if vi.type.tensor_type.HasField("shape")}


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
