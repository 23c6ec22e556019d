"""``--outputs NAME[,NAME...]``: cut a model at chosen tensors before conversion.

A detector's post-processing (score filtering with NonZero, TopK, NMS) has output sizes that
depend on data; no static int8 graph can hold it (``dynamic.py`` refuses it and names the last
static tensors). Cut at those tensors and the rest converts; the application runs the
post-processing. The cut keeps the nodes the named tensors are computed from, the graph inputs and
initializers they read, and makes the named tensors the graph outputs, in the order given:

    cut_outputs(model, ["boxes", "scores"], where="det.onnx") -> a smaller copy

Names that are not tensors of the graph are a UsageError that lists near matches. Tensors read
inside an ``If``/``Loop`` body from the outer graph count as that node's inputs.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import onnx

from core.errors import UsageError

NEAR = 3    # near matches listed per unknown name


def parse_outputs(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'a,b' (or repeated flags) -> ('a', 'b'); empty entries dropped."""
    if not text:
        return ()
    parts = [text] if isinstance(text, str) else list(text)
    return tuple(n.strip() for p in parts for n in p.split(",") if n.strip())


def cut_outputs(model: onnx.ModelProto, outputs: Sequence[str], where: str = "<model>") -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are ``outputs`` and whose nodes are only those they need."""
    graph = model.graph
    produced = {o: node for node in graph.node for o in node.output if o}
    inputs = {i.name for i in graph.input}
    _check_names(outputs, produced, inputs, where)
    keep = _ancestors(graph, outputs, produced)
    typed = _value_infos(model)
    missing = [n for n in outputs if n not in typed]
    if missing:
        raise UsageError(f"no type is known for --outputs {', '.join(missing)}", where=where,
                         hint="run onnx.shape_inference.infer_shapes on the model, or cut at other tensors")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    needed = {i for n in keep for i in _reads(n)} | set(outputs)
    del out.graph.node[:]
    out.graph.node.extend(n for n in graph.node if id(n) in {id(k) for k in keep})
    _filter(out.graph.input, lambda v: v.name in needed)
    _filter(out.graph.initializer, lambda t: t.name in needed)
    del out.graph.output[:]
    out.graph.output.extend(typed[n] for n in outputs)
    return out


def _check_names(outputs, produced, inputs, where) -> None:
    known = sorted(set(produced) | inputs)
    problems = []
    for name in outputs:
        if name not in produced and name not in inputs:
            near = difflib.get_close_matches(name, known, n=NEAR, cutoff=0.5)
            problems.append(f"{name!r}" + (f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""))
    if problems:
        raise UsageError(f"--outputs names no tensor of the model: {'; '.join(problems)}", where=where,
                         code="usage.outputs", hint="name tensors the graph computes (ganglion inspect lists them)")
    if not outputs:
        raise UsageError("--outputs names no tensor", where=where, code="usage.outputs",
                         hint="write --outputs NAME[,NAME...]")


def _ancestors(graph: onnx.GraphProto, outputs, produced) -> list[onnx.NodeProto]:
    """The nodes ``outputs`` are computed from (in graph order)."""
    seen: set[int] = set()
    stack = [produced[n] for n in outputs if n in produced]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(produced[i] for i in _reads(node) if i in produced)
    return [n for n in graph.node if id(n) in seen]


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors ``node`` reads: its inputs and what its subgraphs read (a superset is safe:
    names defined inside a body are not produced outside it)."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in g.node:
                names |= _reads(inner)
    return names


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """name -> ValueInfoProto with a type, from the model and from ONNX shape inference."""
    found = {v.name: v for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
    found.update({v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info})
    return {k: v for k, v in found.items() if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}


def _filter(repeated, keep) -> None:
    kept = [x for x in repeated if keep(x)]
    del repeated[:]
    repeated.extend(kept)
