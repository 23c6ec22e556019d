"""The explicit lowering registry: ``@lowers("Clip", since=11)`` maps an ONNX op to one function.

A lowering is ``fn(ctx, node) -> None`` and emits TFLite ops through ``ctx``. An optional
``check(node, graph) -> str | None`` returns why a particular node cannot be lowered (an attribute
value, a non-constant weight); ``check_supported`` runs every check first and raises one
``UnsupportedOpsError`` listing every problem of the model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from converters.errors import UnsupportedOpsError
from converters.frontend import dynamic
from converters.ir import Graph, Node


@dataclass(frozen=True)
class Lowering:
    op: str
    since: int
    fn: Callable
    check: Callable | None


LOWERINGS: dict[str, list[Lowering]] = {}


def lowers(op: str, since: int = 1, check: Callable | None = None, domain: str = ""):
    """Register ``fn`` as the lowering of ``op`` for opsets >= ``since``."""
    def register(fn):
        key = f"{domain}::{op}" if domain else op
        LOWERINGS.setdefault(key, []).append(Lowering(op, since, fn, check))
        LOWERINGS[key].sort(key=lambda lw: -lw.since)
        return fn
    return register


def find(node: Node, opset: int) -> Lowering | None:
    key = f"{node.domain}::{node.op}" if node.domain else node.op
    for lw in LOWERINGS.get(key, []):
        if opset >= lw.since:
            return lw
    return None


def problems_of(graph: Graph) -> list[str]:
    """Every reason the graph cannot be lowered, one line per node."""
    problems = []
    for node in graph.nodes:
        if node.attrs.get("_after_data_dependent"):
            continue                      # summarized once by frontend.dynamic.refusal
        label = f"{node.op} '{node.name}'" + (f" (domain {node.domain})" if node.domain else "")
        if "_unresolved" in node.attrs:   # the frontend's reason says more than "not supported"
            problems.append(f"{label}: {node.attrs['_unresolved']}")
            continue
        lw = find(node, graph.opset)
        if lw is None:
            problems.append(f"{label}: op not supported at opset {graph.opset}")
            continue
        missing = [t for t in (*node.inputs, *node.outputs)
                   if t and graph.tensors[t].shape is None]
        if missing:
            problems.append(f"{label}: no static shape for {', '.join(missing)}")
            continue
        empty = [t for t in (*node.inputs, *node.outputs) if t and 0 in graph.tensors[t].shape]
        if empty:
            problems.append(f"{label}: zero-size tensor(s) {', '.join(empty)} (TFLite shapes are non-empty)")
            continue
        why = lw.check(node, graph) if lw.check else None
        if why:
            problems.append(f"{label}: {why}")
    return problems


def check_supported(graph: Graph) -> None:
    problems = problems_of(graph)
    if problems:
        raise dynamic.refusal(graph, problems) or UnsupportedOpsError(
            problems, where=f"graph '{graph.name}'",
            hint="replace these ops in the exporter, or open an issue with the op list")
