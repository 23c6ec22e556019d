"""Fuse a Relu / Clip that follows an op into that op's TFLite ``fused_activation_function``.

TFLite kernels apply RELU, RELU6 and RELU_N1_TO_1 for free at the end of CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, DIV and pools; in int8 the
clamp is folded into the output range. TANH is *not* fused: CONV_2D and friends compute their
activation range with ``CalculateActivationRange``, which ignores kTfLiteActTanh, so a fused TANH
would be dropped silently (tensorflow/lite/kernels/kernel_util.h).
"""
from __future__ import annotations

import math

from converters.ir import Graph, Node

# ONNX producers whose TFLite lowering applies a fused activation. (CONCATENATION has the field
# but its kernel ignores it, so Concat is not here.)
FUSIBLE_PRODUCERS = {"Conv", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool"}
# (min, max) Clip bounds -> TFLite activation.
CLIP_ACTIVATIONS = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, math.inf): "RELU"}


def activation_of(node: Node) -> str | None:
    """The TFLite fused activation that ``node`` is equivalent to, if any."""
    if node.op == "Relu":
        return "RELU"
    if node.op == "Clip" and "_unresolved" not in node.attrs:
        return CLIP_ACTIVATIONS.get((float(node.attrs["min"]), float(node.attrs["max"])))
    return None


def _fusible(producer: Node, graph: Graph) -> bool:
    if producer.op in ("MatMul", "Gemm"):
        # Only when it lowers to FULLY_CONNECTED: a constant 2-D weight and an input of rank >= 2.
        w = graph.const(producer.inputs[1])
        a = graph.tensors[producer.inputs[0]].shape
        return w is not None and w.ndim == 2 and a is not None and len(a) >= 2
    return producer.op in FUSIBLE_PRODUCERS and not producer.domain


def run(graph: Graph) -> bool:
    changed = False
    producers = graph.producers()
    consumers = graph.consumers()
    for node in list(graph.nodes):
        act = activation_of(node)
        if act is None:
            continue
        x = node.inputs[0]
        producer = producers.get(x)
        if (producer is None or not _fusible(producer, graph) or "_activation" in producer.attrs
                or x in graph.outputs or len(consumers.get(x, [])) != 1
                or len(producer.outputs) != 1):
            continue
        producer.attrs["_activation"] = act
        producer.attrs.setdefault("_absorbed", []).append(node.name)   # for keep_float by name
        producer.outputs = [node.outputs[0]]
        producers[node.outputs[0]] = producer
        graph.nodes.remove(node)
        changed = True
    if changed:
        graph.remove_unused()
    return changed
