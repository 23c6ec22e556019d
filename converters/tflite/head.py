"""The float head: run the first N layers of a network in float, the rest in int8.

Why (measured, docs/converter-internals.md "Performance"): on x86 with XNNPACK, an int8 layer
that reads few channels or does little work per output (the 3-channel stem convolution, the
first 3x3 depthwise at 112x112, a 32->16 pointwise) runs up to 2.5x *slower* than its float form:
its int8 kernel pads each tap to 8 channels and requantizes every output. At the start of a CNN
these layers sit next to the float input anyway, so keeping them float costs one QUANTIZE where the
head ends instead of one at the input (choose N so the head ends on a narrow tensor, e.g. after a
projection). This is opt-in: on Arm, and for int8-only accelerators, the all-int8 graph is the one
to ship.

A *layer* is an op with weights (``rules.WEIGHTS``: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
TRANSPOSE_CONV). The head is every op up to and including the N-th layer in execution order, named
by the ONNX nodes they came from, so it travels through ``keep_float`` (and the manifest) like any
other node the user keeps float.
"""
from __future__ import annotations

import onnx

from converters import lower as lowering     # called as lowering.lower: one patchable door
from converters.frontend import to_graph
from converters.frontend.names import node_names
from converters.passes import run_pipeline
from converters.tflite.rules import WEIGHTS
from converters.tgraph import TGraph


def head_of(tg: TGraph, n: int) -> set[str]:
    """Names of the nodes whose ops run before (and including) the ``n``-th layer of ``tg``."""
    names: set[str] = set()
    seen = 0
    for op in tg.ops:
        if seen >= n:
            break
        names.add(op.node)
        seen += op.opcode in WEIGHTS
    return names


def head_nodes(model: onnx.ModelProto, n: int) -> list[str]:
    """The ONNX node names of the first ``n`` layers of ``model`` (see module doc), sorted. A
    TFLite build reports the same set as ``TFLiteResult.float_head`` from its own lowering; this
    lowers the model once more, for conversions that build no TFLite model (QDQ only)."""
    if n <= 0:
        return []
    graph = to_graph(model)
    run_pipeline(graph)
    return sorted(head_of(lowering.lower(graph), n) & set(node_names(model)))
