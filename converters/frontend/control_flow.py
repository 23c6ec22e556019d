"""Control flow with constant control, replaced by plain nodes: If inlined, Loop unrolled.

TFLite has no If/Loop builtins a converter can target for int8, but exporters emit them for
decisions that are constant once input shapes are pinned (``if x.shape[0] == 1``, a loop over the
layers of a scripted module). ``expand(graph, index)`` rewrites such a node in place:

- **If** whose condition is a constant: the chosen branch's nodes are spliced in. Every name the
  branch defines gets a fresh graph-unique name (``<if node>/then/<name>__<k>``); references to
  outer scopes (the parent graph, or the branch from a nested subgraph) are resolved by renaming
  inside nested subgraphs too; the branch outputs become the If's outputs.
- **Loop** with a constant trip count ``M <= MAX_LOOP_UNROLL``, a constant (or absent) start
  condition and a body that cannot stop early (its condition output passes the input condition
  through, or is a constant true) is unrolled: ``M`` copies of the body, loop-carried values
  chained, scan outputs stacked with Unsqueeze + Concat on axis 0
  (https://onnx.ai/onnx/operators/onnx__Loop.html).

``why_not(node, graph)`` says why a remaining If/Loop cannot be expanded; the frontend's
data-dependence check (``dynamic.py``) reports it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.frontend.subgraphs import local_names, rename
from converters.frontend.to_ir import add_outputs, constant_value, ir_node
from converters.ir import Graph, Node, Tensor

MAX_LOOP_UNROLL = 64   # copies of a Loop body; past it the graph grows more than a model should


def expand(graph: Graph, index: int) -> bool:
    """Replace ``graph.nodes[index]`` (an If or Loop with constant control) by plain nodes."""
    node = graph.nodes[index]
    if node.domain or node.op not in ("If", "Loop") or why_not(node, graph):
        return False
    nodes = _if_nodes(graph, node) if node.op == "If" else _loop_nodes(graph, node)
    graph.nodes[index:index + 1] = nodes
    return True


def why_not(node: Node, graph: Graph) -> str | None:
    """Why this If/Loop cannot be expanded (None when it can)."""
    if node.op == "If":
        cond = graph.const(node.inputs[0])
        if cond is None:
            return "its condition is computed from data"
        return None if np.asarray(cond).size == 1 else "its condition is not a single value"
    return _loop_refusal(node, graph)


def splice(graph: Graph, body: onnx.GraphProto, prefix: str, bind: dict[str, str],
           outputs: list[str]) -> list[Node]:
    """The IR nodes of ``body`` with fresh names; ``bind`` maps body inputs to graph tensors and
    the body's outputs become ``outputs`` ("" drops one). Constants go into ``graph.tensors``."""
    body = onnx.GraphProto.FromString(body.SerializeToString())   # never edit the node's attribute
    mapping = dict(bind)
    for name in dict.fromkeys(local_names(body)):
        if name not in mapping:
            mapping[name] = graph.fresh(f"{prefix}/{name}")
    rename(body, mapping)
    infos = {vi.name: vi for vi in [*body.value_info, *body.output]}
    for init in body.initializer:
        graph.set_const(init.name, numpy_helper.to_array(init))
    nodes = []
    for k, proto in enumerate(body.node):
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            graph.set_const(proto.output[0], constant_value(proto))
            continue
        nodes.append(ir_node(proto, graph.opset, graph.fresh(f"{prefix}/{proto.name or proto.op_type}_{k}")))
        add_outputs(graph.tensors, proto, infos)
    claimed: dict[str, str] = {}
    for vi, outer in zip(body.output, outputs):
        if outer:
            nodes += _bind_output(graph, vi.name, outer, nodes, claimed, prefix)
    return nodes


def _bind_output(graph: Graph, src: str, outer: str, nodes: list[Node], claimed: dict[str, str],
                 prefix: str):
    """Make ``outer`` hold the body output ``src``: rename the output of the body node that makes
    it (first claim only), else copy it with an Identity (an input, a constant, an outer value)."""
    producer = next((n for n in nodes if src in n.outputs), None)
    inner = graph.tensors.get(src)
    if outer not in graph.tensors or graph.tensors[outer].shape is None and inner is not None:
        graph.tensors[outer] = Tensor(outer, inner.shape if inner else None, inner.dtype if inner else None)
    if producer is None or src in claimed:
        return [Node("Identity", graph.fresh(f"{prefix}/output"), [claimed.get(src, src)], [outer])]
    claimed[src] = outer
    for node in nodes:
        node.inputs = [outer if i == src else i for i in node.inputs]
        node.outputs = [outer if o == src else o for o in node.outputs]
    graph.tensors.pop(src, None)
    return []


def _if_nodes(graph: Graph, node: Node) -> list[Node]:
    which = "then" if bool(np.asarray(graph.const(node.inputs[0])).reshape(-1)[0]) else "else"
    return splice(graph, node.attrs[f"{which}_branch"], f"{node.name}/{which}", {}, node.outputs)


def _loop_refusal(node: Node, graph: Graph) -> str | None:
    body = node.attrs["body"]
    trip, start = node.input(0), node.input(1)
    if not trip:
        return "it has no trip count (a while loop: its iterations depend on data)"
    count = graph.const(trip)
    if count is None:
        return "its trip count is computed from data"
    if start and graph.const(start) is None:
        return "its start condition is computed from data"
    count = int(np.asarray(count).reshape(-1)[0])
    if count > MAX_LOOP_UNROLL:
        return f"its trip count {count} exceeds the unroll bound {MAX_LOOP_UNROLL}"
    if not _never_stops_early(body):
        return "its body computes the loop condition, so it may stop early depending on data"
    scans = len(body.output) - 1 - (len(node.inputs) - 2)
    if scans and _trip_count(node, graph) == 0:
        return "it runs zero times, which leaves its scan outputs empty (TFLite tensors are non-empty)"
    return None


def _never_stops_early(body: onnx.GraphProto) -> bool:
    """The body's condition output is its condition input (directly, or through Identity/Cast to
    bool) or a constant true."""
    cond_in, cond_out = body.input[1].name, body.output[0].name
    producers = {o: n for n in body.node for o in n.output}
    consts = {t.name: numpy_helper.to_array(t) for t in body.initializer}
    while cond_out != cond_in:
        if cond_out in consts:
            return bool(np.all(consts[cond_out]))
        node = producers.get(cond_out)
        if node is None:
            return False
        if node.op_type == "Constant":
            return bool(np.all(constant_value(node)))
        if node.op_type not in ("Identity", "Cast"):
            return False
        cond_out = node.input[0]
    return True


def _trip_count(node: Node, graph: Graph) -> int:
    count = int(np.asarray(graph.const(node.inputs[0])).reshape(-1)[0])
    start = graph.const(node.input(1)) if node.input(1) else True
    return max(count, 0) if bool(np.asarray(start).reshape(-1)[0]) else 0


def _loop_nodes(graph: Graph, node: Node) -> list[Node]:
    body = node.attrs["body"]
    n_carried = len(node.inputs) - 2
    carried, scans, nodes = list(node.inputs[2:]), [], []
    for i in range(_trip_count(node, graph)):
        bind = {body.input[0].name: graph.add_const(f"{node.name}/iter", np.array(i, np.int64)),
                body.input[1].name: graph.add_const(f"{node.name}/cond", np.array(True))}
        bind.update({vi.name: carried[k] for k, vi in enumerate(body.input[2:])})
        outs = ["", *(graph.fresh(f"{node.name}/{i}/{vi.name}") for vi in body.output[1:])]
        nodes += splice(graph, body, f"{node.name}/{i}", bind, outs)
        carried, step = outs[1:1 + n_carried], outs[1 + n_carried:]
        scans.append(step)
    for src, outer in zip(carried, node.outputs[:n_carried]):
        if outer:
            nodes.append(Node("Identity", graph.fresh(f"{node.name}/final"), [src], [outer]))
    for k, outer in enumerate(node.outputs[n_carried:]):
        if outer:
            nodes += _stack(graph, node.name, [step[k] for step in scans], outer)
    return nodes


def _stack(graph: Graph, prefix: str, parts: list[str], outer: str) -> list[Node]:
    """Unsqueeze each part on axis 0 and Concat them into ``outer`` (a Loop scan output)."""
    nodes, rows = [], []
    for part in parts:
        row = graph.fresh(f"{prefix}/row")
        graph.tensors[row] = Tensor(row, None, graph.tensors[part].dtype)
        if graph.opset >= 13:   # Unsqueeze axes: an attribute before opset 13, an input since
            axes = graph.add_const(f"{prefix}/axes", np.array([0], np.int64))
            proto = helper.make_node("Unsqueeze", [part, axes], [row])
        else:
            proto = helper.make_node("Unsqueeze", [part], [row], axes=[0])
        nodes.append(ir_node(proto, graph.opset, graph.fresh(f"{prefix}/unsqueeze")))
        rows.append(row)
    concat = helper.make_node("Concat", rows, [outer], axis=0)
    return [*nodes, ir_node(concat, graph.opset, graph.fresh(f"{prefix}/stack"))]
