"""Fold BatchNormalization into the preceding Conv, ConvTranspose or Gemm; rewrite any other BN as
Mul + Add.

Inference BN is ``y = (x - mean) * gamma / sqrt(var + eps) + beta``, a per-channel affine map. When
its input comes from a Conv (a ConvTranspose, a Gemm) read by nobody else, the affine map is folded
into that op's weights and bias, so no op is left at run time (an int8 Mul + Add after a decoder's
ConvTranspose rounded twice more: GTCRN's own SQNR 0.4 dB there). Otherwise it becomes Mul(scale) + Add(shift)
with [C, 1, ..., 1] constants that broadcast along the channel axis (and later fuse or lower to
cheap elementwise ops).
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node


def run(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op != "BatchNormalization" or node.domain:
            continue
        params = [graph.const(n) for n in node.inputs[1:5]]
        if any(p is None for p in params) or node.attrs.get("training_mode", 0):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
        shift = beta - mean * scale
        if not _fold_into_producer(graph, node, scale, shift):
            _as_mul_add(graph, node, scale, shift)
        changed = True
    if changed:
        graph.remove_unused()
    return changed


def _fold_into_producer(graph: Graph, bn: Node, scale, shift) -> bool:
    x = bn.inputs[0]
    producer = graph.producers().get(x)
    if producer is None or x in graph.outputs or len(graph.consumers().get(x, [])) != 1:
        return False
    if producer.op == "Conv":
        w, b = graph.const(producer.inputs[1]), _bias(graph, producer, 2)
        if w is None or b is None:
            return False
        w2 = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b2 = b * scale + shift
        producer.inputs[1:] = [graph.add_const(producer.inputs[1] + "_bn", w2.astype(w.dtype)),
                               graph.add_const(bn.name + "_bias", b2.astype(w.dtype))]
    elif producer.op == "ConvTranspose":
        if not _fold_into_conv_transpose(graph, producer, bn, scale, shift):
            return False
    elif producer.op == "Gemm" and graph.tensors[x].rank == 2:
        if not _fold_into_gemm(graph, producer, bn, scale, shift):
            return False
    else:
        return False
    producer.outputs = [bn.outputs[0]]
    producer.attrs.setdefault("_absorbed", []).append(bn.name)
    graph.nodes.remove(bn)
    return True


def _bias(graph: Graph, node: Node, index: int):
    """The bias as float64 [C], zeros when absent; None when it is not constant."""
    w = graph.const(node.inputs[1])
    if not node.input(index):
        return np.zeros(w.shape[0], np.float64)
    b = graph.const(node.input(index))
    return None if b is None else b.astype(np.float64)


def _fold_into_conv_transpose(graph: Graph, ct: Node, bn: Node, scale, shift) -> bool:
    """ConvTranspose weights are [I, O/group, k...]: output channel g * O/group + o is column o of
    group g's rows (https://onnx.ai/onnx/operators/onnx__ConvTranspose.html)."""
    w = graph.const(ct.inputs[1])
    group = ct.attrs.get("group", 1)
    out = w.shape[1] * group
    b = graph.const(ct.input(2)) if ct.input(2) else np.zeros(out)
    if w is None or b is None or scale.size != out:
        return False
    per_out = scale.reshape(group, 1, w.shape[1], *(1,) * (w.ndim - 2))
    w2 = (w.reshape(group, w.shape[0] // group, *w.shape[1:]) * per_out).reshape(w.shape)
    ct.inputs[1:] = [graph.add_const(ct.inputs[1] + "_bn", w2.astype(w.dtype)),
                     graph.add_const(bn.name + "_bias", (b.astype(np.float64) * scale + shift).astype(w.dtype))]
    return True


def _fold_into_gemm(graph: Graph, gemm: Node, bn: Node, scale, shift) -> bool:
    w = graph.const(gemm.inputs[1])
    n = graph.tensors[bn.inputs[0]].shape[1]
    c = graph.const(gemm.input(2)) if gemm.input(2) else np.zeros(n)
    if w is None or c is None or c.size not in (1, n):
        return False
    alpha, beta = gemm.attrs.get("alpha", 1.0), gemm.attrs.get("beta", 1.0)
    w2 = w * alpha * (scale[:, None] if gemm.attrs.get("transB", 0) else scale[None, :])
    c2 = (np.broadcast_to(c.reshape(-1), (n,)) * beta) * scale + shift
    gemm.inputs = [gemm.inputs[0], graph.add_const(gemm.inputs[1] + "_bn", w2.astype(w.dtype)),
                   graph.add_const(bn.name + "_bias", c2.astype(w.dtype))]
    gemm.attrs.update(alpha=1.0, beta=1.0)
    return True


def _as_mul_add(graph: Graph, bn: Node, scale, shift) -> None:
    x_t = graph.tensors[bn.inputs[0]]
    shape = (-1,) + (1,) * (x_t.rank - 2)
    dtype = x_t.dtype
    mid = graph.fresh(bn.outputs[0] + "_scaled")
    graph.tensors[mid] = type(x_t)(mid, x_t.shape, dtype)
    s = graph.add_const(bn.name + "_scale", scale.reshape(shape).astype(dtype))
    t = graph.add_const(bn.name + "_shift", shift.reshape(shape).astype(dtype))
    mul = Node("Mul", bn.name + "_mul", [bn.inputs[0], s], [mid])
    add = Node("Add", bn.name + "_add", [mid, t], [bn.outputs[0]])
    at = graph.nodes.index(bn)
    graph.nodes[at:at + 1] = [mul, add]
