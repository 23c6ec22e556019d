"""ONNX-level inlining of an ``If`` whose condition is computed from constants only.

Once ``--input-value`` (or a control input found constant in the calibration data) freezes an
input, an ``If`` on it has one live branch. The IR frontend inlines it for the TFLite lowering
(``control_flow.py``), but calibration and the QDQ writer work on the ONNX model: with the ``If``
kept, the calibration ranges stop at the ``If`` and the QDQ model leaves the whole branch float.
``inline_constant_ifs(model)`` splices the live branch into the ONNX graph instead, so every
stage sees the same plain graph (https://onnx.ai/onnx/operators/onnx__If.html).

The condition's producers (its "cone") must read only initializers and Constant nodes; the cone
is evaluated with ``onnx.reference``. Branch-local names are made model-unique first
(``subgraphs.make_unique``); a branch's nodes keep their names (``--keep-float`` takes them);
the branch outputs are renamed to the If's outputs, or copied with an Identity when the branch
only passes an outer name through.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from converters.frontend import subgraphs


def inline_constant_ifs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every top-level If on a constant condition inlined (to a fixed point)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())   # never edit the caller's proto
    if not any(n.op_type == "If" and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    subgraphs.make_unique(model)
    while _inline_one(model):
        pass
    return model


def _inline_one(model: onnx.ModelProto) -> bool:
    graph = model.graph
    for index, node in enumerate(graph.node):
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        cond = _constant(model, node.input[0])
        if cond is None or cond.size != 1:
            continue
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond.reshape(-1)[0] else "else_branch"))
        nodes = _spliced(branch, list(node.output))
        graph.node.remove(node)
        for k, new in enumerate(nodes):
            graph.node.insert(index + k, new)
        graph.initializer.extend(branch.initializer)
        return True
    return False


def _spliced(branch: onnx.GraphProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """The branch's nodes, its outputs renamed to ``outputs`` (the If's)."""
    produced = {o for n in branch.node for o in n.output if o}
    mapping, copies = {}, []
    for vi, outer in zip(branch.output, outputs):
        if not outer:
            continue
        if vi.name in produced and vi.name not in mapping:
            mapping[vi.name] = outer
        else:         # an outer name or an initializer passed through, or one value twice
            copies.append((vi.name, outer))
    subgraphs.rename(branch, mapping)
    nodes = list(branch.node)
    nodes += [helper.make_node("Identity", [mapping.get(src, src)], [outer], name=f"{outer}/Identity")
              for src, outer in copies]
    return nodes


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of ``name`` when only initializers and Constant-fed nodes make it, else None."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    cone, needed, todo = [], set(), [name]
    while todo:
        tensor = todo.pop()
        if tensor in inits:
            needed.add(tensor)
            continue
        node = producer.get(tensor)
        if node is None or subgraphs.has_subgraph(node):
            return None          # a graph input (data), or control flow inside the cone
        if any(node is seen for seen in cone):
            continue
        cone.append(node)
        todo.extend(i for i in node.input if i)
    order = [n for n in graph.node if any(n is seen for seen in cone)]
    sub = helper.make_graph(order, "cond", [], [helper.make_empty_tensor_value_info(name)],
                            [inits[i] for i in sorted(needed)])
    try:
        return np.asarray(ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})[0])
    except Exception:          # the reference evaluator raises assorted errors: leave the If alone
        return None
