"""Fold every node whose inputs are all constant (and Shape/Size of a static tensor) into a constant.

Exporters emit Shape -> Gather -> Concat -> Reshape chains and weight preprocessing subgraphs;
TFLite wants plain constants. Evaluation is the ONNX reference implementation, one node at a time
at the model's opset (``converters.frontend.evaluate``), so folding is exactly the spec's
semantics. The frontend already folded to a fixed point (``frontend.fold``); this pass catches
what a later pass exposes, in one topological sweep.
"""
from __future__ import annotations

from converters.frontend.evaluate import evaluate
from converters.ir import Graph


def run(graph: Graph) -> bool:
    changed = False
    keep = []
    for node in graph.nodes:
        values = evaluate(node, graph)
        if values is None:
            keep.append(node)
            continue
        for name, value in zip(node.outputs, values):
            if name:
                graph.set_const(name, value)
        changed = True
    graph.nodes = keep
    if changed:
        graph.remove_unused()
    return changed
