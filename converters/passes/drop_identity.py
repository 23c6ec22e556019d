"""Drop Identity and (inference-mode) Dropout: their consumers read the input directly.

When the dropped node's output is a graph output, the producer of its input is renamed instead so
the model keeps its ONNX output name; if that is impossible (the input is a graph input, a
constant, or already a graph output) the node stays and lowers to a copy.
"""
from __future__ import annotations

from converters.ir import Graph

DROPPABLE = {"Identity", "Dropout"}


def run(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op not in DROPPABLE or node.domain or node.attrs.get("_training"):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            producer = graph.producers().get(src)
            if producer is None or src in graph.outputs or graph.const(src) is not None:
                continue
            producer.outputs = [dst if o == src else o for o in producer.outputs]
            graph.nodes.remove(node)
            graph.rename_uses(src, dst)     # src is no graph output (checked above)
        else:
            graph.nodes.remove(node)
            graph.rename_uses(dst, src)
        changed = True
    if changed:
        graph.remove_unused()
    return changed
