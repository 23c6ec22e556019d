"""Turn an additive attention mask (``scores + Where(pad, -inf, 0)``) into a selection
(``Where(pad, -inf, scores)``).

torch exports ``masked_fill(~mask, -inf)`` on a zeros tensor, reshaped/expanded to the scores'
shape and added before the Softmax (khmersm's segmenter; ``scaled_dot_product_attention`` with a
bool mask). The sum is exactly the selection: x + 0 = x and x + (-inf) = -inf (any fill <= -1e4
saturates the Softmax the same way). In int8 the sum is ruinous: the calibration observers ignore
non-finite values, so the mask tensor's range is [0, 0] and the padded positions lose their -inf
(a padded batch read 12 dB where unpadded windows read 29 dB). As a selection the fill is the
lowest value of the scores' own range, whose Softmax weight rounds to 0. A finite fill (-1e9,
``finfo.min``) is still observed as the output's range: that needs the observers' help (not here).

The condition follows the same Reshape / Expand / Unsqueeze / Squeeze chain the mask took (bool
tensors reshape like any other). https://onnx.ai/onnx/operators/onnx__Where.html
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node, Tensor

CHAIN = {"Reshape", "Expand", "Unsqueeze", "Squeeze"}
MASK_FILL = -1e4       # a fill at or below this makes a masked position's Softmax weight 0 in float


def _fill_side(graph: Graph, where: Node) -> int | None:
    """1 or 2: the input of ``where`` holding the mask fill when the other is all zeros."""
    for fill, zero in ((1, 2), (2, 1)):
        f, z = graph.const(where.inputs[fill]), graph.const(where.inputs[zero])
        if f is None or z is None or f.size != 1 or not np.issubdtype(f.dtype, np.floating):
            continue
        if float(f.reshape(-1)[0]) <= MASK_FILL and not np.any(z):
            return fill
    return None


def _trace(graph: Graph, name: str, producers) -> tuple[Node, list[Node]] | None:
    """(Where, chain from it to ``name``) when ``name`` is a mask fill reshaped by ``CHAIN`` ops."""
    chain = []
    node = producers.get(name)
    while node is not None and node.op in CHAIN and not graph.tensors[node.inputs[0]].is_const:
        chain.append(node)
        node = producers.get(node.inputs[0])
    if node is None or node.op != "Where" or _fill_side(graph, node) is None:
        return None
    return node, chain[::-1]


def _rewrite(graph: Graph, add: Node, scores: str, where: Node, chain: list[Node]) -> list[Node]:
    cond, nodes = where.inputs[0], []
    for step in chain:                      # the condition takes the mask's reshapes
        # a fresh name for the node too: layers that share one mask each rewrite its chain
        out = graph.fresh(f"{step.name}/cond")
        graph.tensors[out] = Tensor(out, graph.tensors[step.outputs[0]].shape, np.dtype(np.bool_))
        nodes.append(Node(step.op, out, [cond, *step.inputs[1:]], [out], dict(step.attrs)))
        cond = out
    fill = where.inputs[_fill_side(graph, where)]
    picks = [fill, scores] if _fill_side(graph, where) == 1 else [scores, fill]
    return [*nodes, Node("Where", f"{add.name}/select", [cond, *picks], list(add.outputs))]


def run(graph: Graph) -> bool:
    changed = False
    for add in [n for n in graph.nodes if n.op == "Add"]:
        producers = graph.producers()
        for side in (0, 1):
            found = _trace(graph, add.inputs[side], producers)
            scores = add.inputs[1 - side]
            if found is None or graph.tensors[scores].shape != graph.tensors[add.outputs[0]].shape:
                continue
            at = graph.nodes.index(add)
            graph.nodes[at:at + 1] = _rewrite(graph, add, scores, *found)
            changed = True
            break
    if changed:
        graph.remove_unused()
    return changed
