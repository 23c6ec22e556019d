"""Recognize the exact (erf) GELU that exporters emit and replace it with one Gelu node.

PyTorch exports ``nn.GELU()`` before opset 20 as
``Mul(Add(Erf(Div(x, 1.4142)), 1), Mul(x, 0.5))`` in a few orders. TFLite has a GELU builtin (with
an int8 kernel), while Erf has none, so matching the pattern beats lowering Erf piecewise.
"""
from __future__ import annotations

import math

import numpy as np

from converters.ir import Graph, Node


def _scalar(graph: Graph, name: str) -> float | None:
    value = graph.const(name)
    if value is None or value.size != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def _other(node: Node, name: str) -> str:
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def _match(graph: Graph, erf: Node, producers, consumers):
    """Return (x, output, nodes) when ``erf`` is the core of an exact GELU, else None."""
    div = producers.get(erf.inputs[0])
    if div is None or div.op not in ("Div", "Mul"):
        return None
    x = div.inputs[0]
    k = _scalar(graph, div.inputs[1])
    want = math.sqrt(2.0) if div.op == "Div" else 1 / math.sqrt(2.0)
    if k is None or abs(k - want) > 1e-3:
        return None
    adds = consumers.get(erf.outputs[0], [])
    if len(adds) != 1 or adds[0].op != "Add" or _scalar(graph, _other(adds[0], erf.outputs[0])) != 1.0:
        return None
    add = adds[0]
    muls = consumers.get(add.outputs[0], [])
    if len(muls) != 1 or muls[0].op != "Mul":
        return None
    mul = muls[0]
    partner = _other(mul, add.outputs[0])
    if partner == x:  # (1 + erf) * x, then * 0.5
        last = consumers.get(mul.outputs[0], [])
        if len(last) != 1 or last[0].op != "Mul" or _scalar(graph, _other(last[0], mul.outputs[0])) != 0.5:
            return None
        return x, last[0].outputs[0], [div, erf, add, mul, last[0]]
    half = producers.get(partner)  # (x * 0.5) * (1 + erf)
    if half is None or half.op != "Mul" or x not in half.inputs or _scalar(graph, _other(half, x)) != 0.5:
        return None
    return x, mul.outputs[0], [div, erf, add, half, mul]


def run(graph: Graph) -> bool:
    changed = False
    for erf in [n for n in graph.nodes if n.op == "Erf"]:
        if erf not in graph.nodes:
            continue
        found = _match(graph, erf, graph.producers(), graph.consumers())
        if found is None:
            continue
        x, out, matched = found
        inner = {o for n in matched for o in n.outputs} - {out}
        consumers = graph.consumers()
        if any(o in graph.outputs or any(c not in matched for c in consumers.get(o, []))
               for o in inner):
            continue
        at = min(graph.nodes.index(n) for n in matched)
        graph.nodes = [n for n in graph.nodes if n not in matched]
        graph.nodes.insert(at, Node("Gelu", erf.name + "_gelu", [x], [out],
                                    {"approximate": "none", "_absorbed": [n.name for n in matched]}))
        changed = True
    if changed:
        graph.remove_unused()
    return changed
