"""Per-op lowering of the IR to TFLite builtins, one module per op family.

    lower(graph) -> TGraph       check everything first (one UnsupportedOpsError), then emit

Families: conv, matmul, elementwise, activation, pool, shape, norm, resize. Importing them fills
``registry.LOWERINGS``; adding an op is one decorated function in the right family module.
"""
from __future__ import annotations

from converters.ir import Graph
from converters.lower import activation, conv, elementwise, matmul, norm, pool, resize, shape  # noqa: F401
from converters.lower.context import LowerContext
from converters.lower.registry import LOWERINGS, check_supported, find, lowers, problems_of
from converters.tflite.graph import TGraph

__all__ = ["lower", "lowers", "check_supported", "problems_of", "LOWERINGS"]


def lower(graph: Graph) -> TGraph:
    check_supported(graph)
    ctx = LowerContext(graph)
    ctx.t.inputs = [ctx.value(name) for name in graph.inputs]
    for node in graph.nodes:
        ctx.node = node
        find(node, graph.opset).fn(ctx, node)
    ctx.node = None
    ctx.t.outputs = [ctx.value(name) for name in graph.outputs]
    return ctx.t
