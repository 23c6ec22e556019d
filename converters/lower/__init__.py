"""Per-op lowering of the IR to TFLite builtins, one module per op family.

    lower(graph) -> TGraph       check everything first (one UnsupportedOpsError), then emit

Families: conv, matmul, elementwise, logic, activation, pool, shape, scatter, norm, resize, recurrent.
Importing them fills ``registry.LOWERINGS``; adding an op is one decorated function in the right
family module.
"""
from __future__ import annotations

from converters.errors import ConvertError
from converters.ir import Graph
from converters.lower import (activation, conv, elementwise, logic, matmul, norm, pool,  # noqa: F401
                              recurrent, resize, scatter, shape)
from converters.lower.context import LowerContext
from converters.lower.registry import LOWERINGS, check_supported, find, lowers, problems_of
from converters.tgraph import TGraph

__all__ = ["lower", "lowers", "check_supported", "problems_of", "LOWERINGS"]


def lower(graph: Graph) -> TGraph:
    check_supported(graph)
    ctx = LowerContext(graph)
    ctx.t.inputs = [ctx.value(name) for name in graph.inputs]
    for node in graph.nodes:
        ctx.node = node
        try:
            find(node, graph.opset).fn(ctx, node)
        except ConvertError:
            raise
        except Exception as exc:  # a lowering bug or an input its check() did not foresee
            raise ConvertError(f"cannot lower {node.op} '{node.name}': {type(exc).__name__}: {exc}",
                               code="convert.lowering", where=f"node '{node.name}'",
                               hint="please report this with the model; --keep-float will not "
                                    "help, the op itself failed to lower") from exc
    ctx.node = None
    ctx.t.outputs = [ctx.value(name) for name in graph.outputs]
    return ctx.t
