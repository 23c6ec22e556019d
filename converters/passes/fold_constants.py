"""Fold every node whose inputs are all constant (and Shape/Size of a static tensor) into a constant.

Exporters emit Shape -> Gather -> Concat -> Reshape chains and weight preprocessing subgraphs;
TFLite wants plain constants. Evaluation uses the ONNX reference implementation one node at a time,
so folding is exactly the spec's semantics. A node that fails to evaluate is left alone (the
unsupported-op check or the lowering reports it with a proper error).
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from converters.ir import Graph, Node

# Ops that must not be folded even with constant inputs (non-deterministic or stateful).
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
MAX_FOLD_ELEMENTS = 64 * 1024 * 1024


def run(graph: Graph) -> bool:
    changed = False
    keep = []
    for node in graph.nodes:
        values = _fold(node, graph)
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


def _fold(node: Node, graph: Graph):
    if node.domain not in ("", "ai.onnx") or node.op in NEVER_FOLD or "_unresolved" in node.attrs:
        return None
    if node.op in ("Shape", "Size"):
        return _shape_of(node, graph)
    names = [i for i in node.inputs if i]
    if not names or any(graph.const(i) is None for i in names):
        return None
    try:
        proto = helper.make_node(node.op, node.inputs, node.outputs, **_proto_attrs(node.attrs))
        feeds = {i: graph.const(i) for i in names}
        results = ReferenceEvaluator(proto).run(None, feeds)
    except Exception:  # leave it to the lowering, which raises a typed error
        return None
    results = [np.asarray(r) for r in results]
    if any(r.size > MAX_FOLD_ELEMENTS for r in results):
        return None
    return results


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


def _proto_attrs(attrs: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        if key.startswith("_"):
            continue
        out[key] = numpy_helper.from_array(value) if isinstance(value, np.ndarray) else value
    return out
