"""Refuse data-dependent parts of a graph once, naming them and where to cut the model.

After folding (``fold.py``) every shape of a convertible graph is static. What is left with an
unknown shape comes from an op whose output *size* depends on the input *values*: detector
post-processing (NonZero, score filtering, TopK with a computed K, NonMaxSuppression), or control
flow on data (an If whose condition is computed from the input, a while-Loop). TFLite tensors
have static shapes, so these cannot be lowered. ``mark(graph)`` (frontend) records each such node
and why; ``refusal(graph, problems)`` (``lower.check_supported``) turns the problem list into one
``DataDependentError`` that also counts the nodes computed from them and names the last static
tensors before them: the usual fix is to export the network without its post-processing and run
that in application code.
"""
from __future__ import annotations

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
LISTED = 8   # dependent nodes named in the message; the rest are counted


def roots(graph: Graph) -> list[tuple[Node, str]]:
    """(node, reason) for every node whose output shape depends on input values."""
    found = []
    for node in graph.nodes:
        if node.domain:
            continue
        why = VALUE_SIZED.get(node.op)
        if node.op == "TopK" and graph.const(node.input(1)) is None:
            why = f"its K '{node.input(1)}' is computed from data"
        elif node.op in ("If", "Loop"):
            why = control_flow.why_not(node, graph)
        if why:
            found.append((node, why))
    return found


def mark(graph: Graph) -> None:
    """Record each data-dependent node's reason in ``_unresolved`` (``_data_dependent`` set) and
    flag every node computed from them ``_after_data_dependent``: ``lower.problems_of`` reports
    the first with every other problem and leaves the second to ``refusal``'s one summary line."""
    found = roots(graph)
    tainted = {o for node, _ in found for o in node.outputs if o}
    for node, why in found:
        node.attrs.update(_unresolved=why, _data_dependent=True)
    for node in graph.nodes:
        if not node.attrs.get("_data_dependent") and tainted.intersection(node.inputs):
            tainted.update(o for o in node.outputs if o)
            node.attrs["_after_data_dependent"] = True


def refusal(graph: Graph, problems: list[str]) -> DataDependentError | None:
    """The one error for a graph with data-dependent nodes (see module doc), or None."""
    found = [n for n in graph.nodes if n.attrs.get("_data_dependent")]
    if not found:
        return None
    after = [n for n in graph.nodes if n.attrs.get("_after_data_dependent")]
    problems = list(problems)
    if after:
        named = ", ".join(f"{n.op} '{n.name}'" for n in after[:LISTED])
        more = f" and {len(after) - LISTED} more" if len(after) > LISTED else ""
        problems.append(f"{len(after)} node(s) after them depend on their values: {named}{more}")
    hint = ("export the model without its post-processing (score filtering, TopK, NMS) and run that "
            "in application code")
    cut = _last_static(graph, [*found, *after])
    if cut:
        hint += (f"; the last static tensors before it are {', '.join(cut)}: onnx.utils.extract_model("
                 f"path, out_path, input_names, [{', '.join(repr(c) for c in cut)}]) cuts the model there")
    return DataDependentError(problems, where=f"graph '{graph.name}'", hint=hint)


def _last_static(graph: Graph, region: list[Node]) -> list[str]:
    """Computed tensors with a static shape that feed the data-dependent region from outside it."""
    inside = {o for n in region for o in n.outputs if o}
    cut = []
    for node in region:
        for name in node.inputs:
            t = graph.tensors.get(name) if name else None
            if t is not None and name not in inside and t.data is None and name not in cut:
                cut.append(name)
    return cut
