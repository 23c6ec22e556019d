"""Clean a float ONNX graph before Q/DQ insertion: fold BatchNormalization, drop Identity/Dropout.

The QDQ model quantizes Conv weights per channel; a BatchNormalization left after the Conv would
rescale those channels in float after the int8 product, which neither ONNX Runtime nor TensorRT
fuses into an int8 kernel. Folding first (W' = W * gamma / sqrt(var + eps), b' = (b - mean) *
gamma / sqrt(var + eps) + beta) gives one Conv whose output keeps the BN output's name, so the
calibration ranges (collected on the original graph) still apply by name.

Control-flow subgraphs (If branches, Loop bodies) read names of the graph around them: an
initializer only a branch reads is live, and a tensor a branch reads keeps its name (no Identity
dropped or Conv output renamed under it), else the model fails the ONNX checker
(https://onnx.ai/onnx/repo-docs/IR.html#names-within-a-graph: outer-scope names).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from converters.frontend.subgraphs import descendants


def fold(graph: onnx.GraphProto) -> dict[str, str]:
    """Fold in place; return {folded BatchNormalization node name: the Conv it went into}."""
    _drop_identities(graph)
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    users = use_counts(graph)
    producer = {out: node for node in graph.node for out in node.output}
    doomed = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue
        conv = producer.get(bn.input[0])
        if (conv is None or conv.op_type != "Conv" or users.get(bn.input[0]) != 1
                or bn.input[0] in outputs or not all(n in inits for n in list(bn.input[1:5]) + list(conv.input[1:]))):
            continue
        _fold_pair(graph, conv, bn, inits)
        doomed.append((bn, conv.name))
    for bn, _ in doomed:
        graph.node.remove(bn)
    if doomed:
        drop_dead_initializers(graph)
    return {bn.name: conv_name for bn, conv_name in doomed if bn.name}


def use_counts(graph: onnx.GraphProto) -> Counter:
    """How many node inputs read each tensor name (a subgraph reading it counts once more)."""
    return Counter([name for node in graph.node for name in node.input] + sorted(subgraph_reads(graph)))


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names the subgraphs of ``graph``'s nodes read (their own local names included: harmless
    for "is it used" questions, as no subgraph may shadow an outer name)."""
    return {name for sub in descendants(graph) for node in sub.node for name in node.input}


def drop_dead_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers no node (nor subgraph) reads and no graph output names."""
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    used |= subgraph_reads(graph)
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)


def _fold_pair(graph, conv, bn, inits) -> None:
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + eps)
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2]
         else np.zeros(w.shape[0]))
    new_w = (w * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
    new_b = ((b - mean) * scale + beta).astype(np.float32)
    w_name, b_name = f"{conv.input[1]}_bn_folded", f"{bn.output[0]}_bn_bias"
    graph.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
    del conv.input[1:]
    conv.input.extend([w_name, b_name])
    conv.output[0] = bn.output[0]


def _drop_identities(graph: onnx.GraphProto) -> int:
    """Remove Identity / inference-mode Dropout whose output is not a graph output nor read by a subgraph."""
    outputs = {o.name for o in graph.output} | subgraph_reads(graph)
    rename, keep = {}, []
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        if node.op_type in ("Identity", "Dropout") and node.output[0] not in outputs and \
                all(not o for o in node.output[1:]):
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
    return removed
