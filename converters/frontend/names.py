"""Node names: the one rule for what a node of an ONNX model is called, and the --keep-float check.

ONNX does not require node names, nor unique ones. Everything that names a node to the user or
takes a name from the user (``--keep-float``, ``--float-head``, ``--auto-keep-float``, the
per-layer report, ``ganglion inspect``) goes through ``node_names``, so a name copied from one
of them works in the others and in both targets (TFLite and QDQ ONNX):

    a named node              its own name                        "conv_1"
    an unnamed node           <op_type>_<index in graph.node>     "Conv_3"
    a repeated name           the first keeps it, the k-th repeat "conv_1", "conv_1_1", ...
                              gets _<k> (skipping taken names)

``check_keep_float(model, names)`` refuses any name outside that list, with every unknown name
in one UsageError (and the nearest known name when there is one).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

import onnx

from core.errors import UsageError


def node_names(model: onnx.ModelProto | onnx.GraphProto) -> list[str]:
    """The name of each node of the graph, in graph order (see module doc); all distinct."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    wanted = [node.name or f"{node.op_type}_{index}" for index, node in enumerate(graph.node)]
    names: list[str] = []
    seen: set[str] = set()
    for base in wanted:
        name, k = base, 1
        while name in seen:          # a later repeat, or a synthesized name a real one took
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node of ``graph`` its ``node_names`` name, in place (named, distinct nodes keep
    theirs), so name-based lookups (keep-float, reports) need no index bookkeeping."""
    for node, name in zip(graph.node, node_names(graph)):
        node.name = name


def check_keep_float(model: onnx.ModelProto, keep: Iterable[str]) -> frozenset[str]:
    """``keep`` as a frozenset when every name is one of ``node_names(model)``; else UsageError."""
    keep = frozenset(keep)
    known = node_names(model)
    unknown = sorted(keep - set(known))
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        guesses = [f"{name} -> {match[0]}" for name, match in close.items() if match]
        hint = "node names are listed by 'ganglion inspect MODEL.onnx' (an unnamed node is <OpType>_<index>)"
        if guesses:
            hint += "; did you mean: " + ", ".join(guesses)
        raise UsageError(f"--keep-float names unknown node(s): {', '.join(unknown)}",
                         where="--keep-float", code="usage.keep_float", hint=hint)
    return keep
