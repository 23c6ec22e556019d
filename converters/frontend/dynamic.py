"""Refuse data-dependent parts of a graph once, naming them and where to cut the model.

After folding (``fold.py``) every shape of a convertible graph is static. What is left with an
unknown shape comes from an op whose output *size* depends on the input *values*: detector
post-processing (NonZero, score filtering, TopK with a computed K, NonMaxSuppression), or control
flow on data (an If whose condition is computed from the input, a while-Loop). TFLite tensors
have static shapes, so these cannot be lowered. ``mark(graph)`` (frontend) records each such node
and why; ``refusal(graph, problems)`` (``lower.check_supported``) turns the problem list into one
``DataDependentError`` that also counts the nodes computed from them and names the last static
tensors before them: the usual fix is to cut the network there (``--outputs``, ``cut.py``) or
export it without its post-processing, and run that in application code.
"""
from __future__ import annotations

import re

from converters.errors import DataDependentError
from converters.frontend import control_flow
from converters.ir import Graph, Node

# op -> why its output shape depends on data (https://onnx.ai/onnx/operators/)
VALUE_SIZED = {
    "NonZero": "its output size is the number of non-zero values",
    "NonMaxSuppression": "its output size is the number of boxes kept",
    "Unique": "its output size is the number of distinct values",
    "Compress": "its output size depends on the condition values",
}
LISTED = 8       # dependent nodes named in the message; the rest are counted
CUT_SHOWN = 4    # cut tensors named in the hint
MAX_WALK = 16    # steps back from the region while collapsing the cut tensors
FILTERS = {"Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "And", "Or", "Not", "Xor"}
LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization"}
LINE = re.compile(r"^(?P<op>\S+) '(?P<name>.*?)'(?P<rest>(?: \(domain [^)]*\))?): (?P<why>.*)$")


def roots(graph: Graph) -> list[tuple[Node, str]]:
    """(node, reason) for every node whose output shape depends on input values."""
    found = []
    for node in graph.nodes:
        if node.domain:
            continue
        why = VALUE_SIZED.get(node.op)
        if node.op == "TopK" and graph.const(node.input(1)) is None:
            why = "its K is computed from data"
        elif node.op in ("If", "Loop"):
            why = control_flow.why_not(node, graph)
        if why:
            found.append((node, why))
    return found


def mark(graph: Graph) -> None:
    """Record each data-dependent node's reason in ``_unresolved`` (``_data_dependent`` set) and
    flag ``_after_data_dependent`` every node computed from them, and the comparisons that only
    feed them (``scores > threshold`` before a NonZero): ``lower.problems_of`` reports the first
    with every other problem and leaves the others to ``refusal``'s one summary line."""
    found = roots(graph)
    tainted = {o for node, _ in found for o in node.outputs if o}
    for node, why in found:
        node.attrs.update(_unresolved=why, _data_dependent=True)
    for node in graph.nodes:
        if not node.attrs.get("_data_dependent") and tainted.intersection(node.inputs):
            tainted.update(o for o in node.outputs if o)
            node.attrs["_after_data_dependent"] = True
    region = {id(n) for n in graph.nodes if n.attrs.get("_data_dependent") or n.attrs.get("_after_data_dependent")}
    readers = graph.consumers()
    for node in reversed(graph.nodes):
        if id(node) in region or node.op not in FILTERS or any(o in graph.outputs for o in node.outputs):
            continue
        if all(id(r) in region for o in node.outputs if o for r in readers.get(o, [])):
            node.attrs["_after_data_dependent"] = True
            region.add(id(node))


def refusal(graph: Graph, problems: list[str]) -> DataDependentError | None:
    """The one error for a graph with data-dependent nodes (see module doc), or None."""
    found = [n for n in graph.nodes if n.attrs.get("_data_dependent")]
    if not found:
        return None
    after = [n for n in graph.nodes if n.attrs.get("_after_data_dependent")]
    problems = grouped(problems)
    if after:
        named = ", ".join(f"{n.op} '{n.name}'" for n in after[:LISTED])
        more = f" and {len(after) - LISTED} more" if len(after) > LISTED else ""
        problems.append(f"{len(after)} more node(s) of the same post-processing: {named}{more}")
    hint = ("export the model without its post-processing (score filtering, TopK, NMS) and run that "
            "in application code")
    cut = _cut(graph, [*found, *after])
    steering = _steering(graph, found)
    if steering:                    # a mode/sample-rate input picks a branch
        values = " ".join(f"--input-value {name}=VALUE" for name in steering)
        hint = (f"input(s) {', '.join(map(repr, steering))} steer control flow: convert for one value with "
                f"{values} (or calibrate with data that holds one value for it)")
    elif cut:
        shown = ", ".join(repr(c) for c in cut[:CUT_SHOWN])
        more = f" and {len(cut) - CUT_SHOWN} more" if len(cut) > CUT_SHOWN else ""
        hint += (f"; the last static tensors before it are {shown}{more}: convert with "
                 f"--outputs {','.join(cut)} to cut the model there")
    return DataDependentError(problems, where=f"graph '{graph.name}'", hint=hint)


def grouped(problems: list[str]) -> list[str]:
    """Problem lines of one op with one reason, merged: "NonZero x180 ('a', 'b', ... and 177
    more): its output size ..." (a detector repeats its filtering per class)."""
    groups: dict[tuple, list[str]] = {}
    for line in problems:
        match = LINE.match(line)
        key = (match["op"], match["rest"], match["why"]) if match else (line,)
        groups.setdefault(key, []).append(match["name"] if match else "")
    out = []
    for key, names in groups.items():
        if len(key) == 1 or len(names) == 1:
            out.append(key[0] if len(key) == 1 else f"{key[0]} '{names[0]}'{key[1]}: {key[2]}")
            continue
        shown = ", ".join(repr(n) for n in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        out.append(f"{key[0]} x{len(names)} ({shown}{more}){key[1]}: {key[2]}")
    return out


def _cut(graph: Graph, region: list[Node]) -> list[str]:
    """The static tensors that feed ``region`` from outside, walked back through single-input
    glue (per-class Gather/Slice/Reshape of one score tensor) while that does not widen the set,
    so a detector's 90 per-class inputs collapse to the one tensor they were taken from."""
    inside = {o for n in region for o in n.outputs if o}
    cut = list(dict.fromkeys(name for n in region for name in n.inputs
                             if name and name not in inside and graph.const(name) is None))
    producers = graph.producers()
    best = cut
    for _ in range(MAX_WALK):
        if len(cut) <= CUT_SHOWN:
            break
        step = list(dict.fromkeys(_source(producers.get(t), graph) or t for t in cut))
        if step == cut or len(step) > len(cut):
            break
        cut = step
        best = cut if len(cut) < len(best) else best
    return best


def _steering(graph: Graph, found: list[Node]) -> list[str]:
    """The graph inputs that alone decide every If/Loop in ``found``: each control operand's cone
    reads only them, constants and weightless value ops (silero VAD's ``sr`` -> Reshape -> Gather
    -> Equal -> If). [] when a node is not control flow, or a cone reaches a layer or a shape."""
    producers = graph.producers()
    names: list[str] = []
    for node in found:
        if node.op not in ("If", "Loop"):
            return []
        todo, seen = list(node.inputs[:1] if node.op == "If" else node.inputs[:2]), set()
        while todo:
            t = todo.pop()
            if not t or t in seen or graph.const(t) is not None:
                continue
            seen.add(t)
            if t in graph.inputs:
                names.append(t)
                continue
            p = producers.get(t)
            if p is None or p.op in LAYERS or p.op in ("Shape", "Size") or len(seen) > MAX_WALK:
                return []
            todo.extend(p.inputs)
    return list(dict.fromkeys(names))


def _source(node: Node | None, graph: Graph) -> str | None:
    """The one computed input of a weightless node (None for a layer or a many-input node)."""
    if node is None or node.op in LAYERS:
        return None
    computed = [i for i in node.inputs if i and graph.const(i) is None]
    return computed[0] if len(computed) == 1 else None
