"""Control-flow subgraphs (If branches, Loop/Scan bodies) as ONNX protos: walk, rename, clean.

ONNX lets sibling subgraphs reuse a local name (``then_branch`` and ``else_branch`` may both
define ``t``); only shadowing an outer name is forbidden. Two things trip over such reuse:
ONNX shape inference with data propagation keeps one table of propagated values for the whole
model ("Data for input 0 already exists", so pinning an input broke loading), and inlining a
branch into its parent. ``make_unique`` gives every subgraph-local name a model-wide unique one.

A subgraph's ``value_info`` and output dims were inferred by the exporter for its own input shapes;
once ``--input-shape`` pins them they are stale, and onnxruntime refuses a model whose declared
dims disagree with the ones it infers ("Can't merge shape info"). ``forget_shapes`` drops them
(ranks and element types stay), as ``shapes.fix_input_shapes`` does for the main graph.
"""
from __future__ import annotations

from collections.abc import Iterator

import onnx


def children(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The subgraphs held by the nodes of ``graph`` (one level)."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
            elif attr.type == onnx.AttributeProto.GRAPHS:
                yield from attr.graphs


def has_subgraph(node: onnx.NodeProto) -> bool:
    """Whether ``node`` holds a subgraph (If, Loop, Scan)."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def descendants(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Every subgraph below ``graph``, parents before children."""
    for child in children(graph):
        yield child
        yield from descendants(child)


def local_names(graph: onnx.GraphProto) -> list[str]:
    """Names ``graph`` itself defines: inputs, initializers and node outputs."""
    names = [vi.name for vi in graph.input] + [t.name for t in graph.initializer]
    names += [o for node in graph.node for o in node.output if o]
    return names


def rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename ``mapping``'s names everywhere in ``graph``, and the outer-scope references to them
    in its subgraphs, in place. (No shadowing in ONNX: a subgraph never defines a mapped name.)"""
    if not mapping:
        return
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        vi.name = mapping.get(vi.name, vi.name)
    for t in graph.initializer:
        t.name = mapping.get(t.name, t.name)
    for node in graph.node:
        node.input[:] = [mapping.get(i, i) for i in node.input]
        node.output[:] = [mapping.get(o, o) for o in node.output]
    for child in children(graph):
        rename(child, mapping)


def make_unique(model: onnx.ModelProto) -> None:
    """Rename subgraph-local names that repeat a name defined anywhere else in the model."""
    taken = set(local_names(model.graph)) | {vi.name for vi in model.graph.output}
    counter = 0
    for sub in descendants(model.graph):
        mapping = {}
        for name in dict.fromkeys(local_names(sub)):
            if name in taken:
                while f"{name}__{counter}" in taken:
                    counter += 1
                mapping[name] = f"{name}__{counter}"
                counter += 1
        rename(sub, mapping)
        taken |= set(local_names(sub))


def forget_shapes(model: onnx.ModelProto) -> None:
    """Drop every subgraph's inferred intermediate shapes and its output dims (rank kept)."""
    for sub in descendants(model.graph):
        del sub.value_info[:]
        for vi in sub.output:
            forget_dims(vi)


def forget_dims(vi: onnx.ValueInfoProto) -> None:
    """Make every dim of ``vi`` unknown, keeping its rank (the checker wants a shape field)."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return
    rank = len(tt.shape.dim)
    tt.ClearField("shape")
    tt.shape.SetInParent()
    for _ in range(rank):
        tt.shape.dim.add()
