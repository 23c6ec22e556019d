"""Fold a per-channel constant Add into the Conv (or Gemm) in front of it, as the op's bias, and
a per-channel constant Mul into its weights and bias.

Some exporters write a convolution's bias as a separate node: paddle2onnx's ``Conv`` (no bias)
then ``Add(conv, Reshape(bias, [1, C, 1, 1]))``. Left as two ops, int8 quantizes the Conv's
output *before* the bias is added: when a large bias cancels a large mean (PP-OCR's direction
classifier: squeeze-excitation convs), the pre-bias tensor has a range many times the result's,
and the Add's output keeps only a few of its steps (measured: such an Add at 5.5 dB on its own
with exact inputs). Folded, the int32 accumulator adds the bias exactly (TFLite int8 spec: bias
scale = input scale x weight scale), and only the result is rounded.

The constant must broadcast along the channel axis only: for a Conv output [N, C, *spatial]
that is a scalar or a shape whose only non-1 dimension lines up with C; for a 2-D Gemm output
[N, M] the last axis. Anything else (a per-position constant) is left alone.

A BatchNorm exported as ``Mul(conv, scale) + shift`` (captcha-whisperer's CRNN, every Conv) is
the same story one op earlier: int8 rounds the Conv's output, the Mul's and the Add's. The Mul
folds into the weights (``W[c] *= scale[c]``, ``b[c] *= scale[c]``: exact in float), then the Add
into the bias, leaving one Conv whose output is the only rounding; measured on that CRNN's stem,
the model's output 27.6 -> 30.4 dB (ORT's QDQ, which keeps the three ops: 30.4). Only per-channel
scales fold: a scalar one loses nothing to int8 but a rounding, and PP-OCR's scalar
learnable-affine blocks stay as they were measured.
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node


def run(graph: Graph) -> bool:
    changed = False
    producers, consumers = graph.producers(), graph.consumers()     # made again after each fold
    for node in list(graph.nodes):
        if node.op not in ("Add", "Mul") or node.domain or len(node.inputs) != 2:
            continue
        for pos in (0, 1):
            x, c = node.inputs[pos], node.inputs[1 - pos]
            op = producers.get(x)
            const = graph.const(c)
            if op is None or const is None or x in graph.outputs or len(consumers.get(x, [])) != 1:
                continue
            if (_fold if node.op == "Add" else _fold_scale)(graph, op, node, const):
                changed = True
                producers, consumers = graph.producers(), graph.consumers()
                break
    if changed:
        graph.remove_unused()
    return changed


def _fold(graph: Graph, op: Node, add: Node, const: np.ndarray) -> bool:
    if op.op == "Conv" and op.domain == "":
        w = graph.const(op.inputs[1])
        per_channel = None if w is None else _per_channel(const, w.shape[0], graph.tensors[add.outputs[0]].rank, 1)
        bias_index = 2
    elif op.op == "Gemm" and op.domain == "" and graph.tensors[op.outputs[0]].rank == 2:
        w = graph.const(op.inputs[1])
        n = None if w is None else (w.shape[0] if op.attrs.get("transB", 0) else w.shape[1])
        per_channel = None if w is None else _per_channel(const, n, 2, 1)
        bias_index = 2
    else:
        return False
    if per_channel is None or graph.tensors[add.outputs[0]].shape != graph.tensors[op.outputs[0]].shape:
        return False
    old = _current_bias(graph, op, bias_index, len(per_channel))
    if old is None:
        return False
    bias = (old + per_channel).astype(w.dtype)
    op.inputs = list(op.inputs[:bias_index]) + [graph.add_const(add.name + "_bias", bias)]
    op.outputs = [add.outputs[0]]
    op.attrs.setdefault("_absorbed", []).append(add.name)
    graph.nodes.remove(add)
    return True


def _fold_scale(graph: Graph, op: Node, mul: Node, const: np.ndarray) -> bool:
    """Conv(x, W, b) * s[c] -> Conv(x, W * s[c], b * s[c]); new constants (W may be shared)."""
    w = graph.const(op.inputs[1]) if op.op == "Conv" and op.domain == "" else None
    if w is None or const.size == 1 or graph.tensors[mul.outputs[0]].shape != graph.tensors[op.outputs[0]].shape:
        return False       # a scalar scale (PP-OCR's learnable affine blocks) costs int8 one rounding only
    scale = _per_channel(const, w.shape[0], graph.tensors[mul.outputs[0]].rank, 1)
    old = None if scale is None else _current_bias(graph, op, 2, w.shape[0])
    if old is None:
        return False
    scaled = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    op.inputs = [op.inputs[0], graph.add_const(mul.name + "_weight", scaled),
                 graph.add_const(mul.name + "_bias", (old * scale).astype(w.dtype))]
    op.outputs = [mul.outputs[0]]
    op.attrs.setdefault("_absorbed", []).append(mul.name)
    graph.nodes.remove(mul)
    return True


def _per_channel(const: np.ndarray, channels: int, out_rank: int, channel_axis: int) -> np.ndarray | None:
    """``const`` as a float64 [channels] vector when it broadcasts along ``channel_axis`` only
    (numpy rules: aligned to the right of an output of rank ``out_rank``), else None."""
    if const.size == 1:
        return np.full(channels, float(const.reshape(())), np.float64)
    if const.ndim > out_rank:
        return None
    at = channel_axis - (out_rank - const.ndim)       # the channel axis's index in const
    if at < 0 or const.shape[at] != channels or const.size != channels:
        return None
    return const.reshape(channels).astype(np.float64)


def _current_bias(graph: Graph, op: Node, index: int, channels: int) -> np.ndarray | None:
    """The op's bias as float64 [channels] (zeros when absent; a Gemm's C scaled by beta), or None
    when it is not a constant of that size."""
    if not op.input(index):
        return np.zeros(channels, np.float64)
    b = graph.const(op.input(index))
    if b is None or b.size not in (1, channels):
        return None
    beta = op.attrs.get("beta", 1.0) if op.op == "Gemm" else 1.0
    if op.op == "Gemm":
        op.attrs["beta"] = 1.0
    return np.broadcast_to(b.reshape(-1).astype(np.float64) * beta, (channels,))
