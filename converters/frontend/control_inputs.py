"""Graph inputs that only steer control flow (an ``If`` condition, a ``Loop`` trip count).

A streaming voice-activity detector takes its sample rate as an int64 scalar input and branches on
it (``If(sr == 16000)``); TFLite has no ``If``, so the converter needs that condition constant.
When the calibration data holds one value for such an input in every sample, the model is used
with that value: ``converters.freeze.constant_controls`` freezes it (as ``--input-value`` would),
warns, and the manifest records it. An input is a *control input* when everything computed from
it reaches only the control operands of If/Loop nodes (input 0 of an If; the trip count and start
condition of a Loop) -- never a graph output, a branch body (outer-scope reference) or any data
operand -- so freezing it changes which branch runs, not the values a branch computes.

    control_inputs(model) -> [input name]      in graph-input order
"""
from __future__ import annotations

import onnx

from converters.frontend.subgraphs import descendants

CONTROL_OPERANDS = {"If": (0,), "Loop": (0, 1)}   # https://onnx.ai/onnx/operators/onnx__If.html, __Loop


def control_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the graph inputs that only steer If/Loop control (see module doc)."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))
    # names read inside any branch/body (ONNX forbids shadowing, so an outer name is the outer value)
    captured = {name for sub in descendants(graph) for node in sub.node for name in node.input}
    outputs = {o.name for o in graph.output}
    return [vi.name for vi in graph.input
            if vi.name not in inits and _steers_only(vi.name, consumers, captured, outputs)]


def _steers_only(name: str, consumers, captured: set[str], outputs: set[str]) -> bool:
    """Whether every value computed from ``name`` ends in a control operand (at least one)."""
    seen, todo, steers = {name}, [name], False
    while todo:
        tensor = todo.pop()
        if tensor in outputs or tensor in captured:
            return False
        for node, k in consumers.get(tensor, ()):
            if node.domain in ("", "ai.onnx") and k in CONTROL_OPERANDS.get(node.op_type, ()):
                steers = True
                continue
            if node.op_type in CONTROL_OPERANDS:      # a data operand of If/Loop
                return False
            for out in node.output:
                if out and out not in seen:
                    seen.add(out)
                    todo.append(out)
    return steers
