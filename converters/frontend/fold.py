"""Fold the IR to a fixed point: shapes inferred, constants folded, constant control flow expanded.

Exporters compute shapes at run time (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, Range,
ConstantOfShape, Where/Equal on shapes) and branch on them (``If``). Once the input shapes are
pinned all of that is constant. One topological sweep does, for each node in turn:

1. forget output shapes computed from a shape this sweep corrected (``dirty``, see 4);
2. expand an If/Loop whose control is constant (``control_flow.expand``; its nodes come next);
3. evaluate a node whose inputs are all constant (``evaluate.evaluate``) and drop it;
4. else infer its unknown output shapes (``evaluate.infer_shapes``) and correct a ceil_mode
   pool's output (``shapes.fix_ceil_pool``).

Because a node is visited after all its producers, a chain folds in one sweep however deep it is
(a fixed number of alternating fold/infer rounds stopped Swin-T half-way). Sweeps repeat until
one changes nothing; more than ``MAX_SWEEPS`` means the rules disagree with each other, a bug
reported as ``ShapeError(code="convert.fold_limit")`` rather than a silent half-folded graph.
"""
from __future__ import annotations

from converters.errors import ShapeError
from converters.frontend import control_flow, shapes
from converters.frontend.evaluate import evaluate, infer_shapes
from converters.ir import Graph

MAX_SWEEPS = 16   # a graph settles in 2 (one that changes, one that confirms)


def settle(graph: Graph) -> int:
    """Fold ``graph`` to a fixed point in place; returns the number of sweeps it took."""
    for sweep in range(1, MAX_SWEEPS + 1):
        if not _sweep(graph):
            return sweep
    raise ShapeError(f"constant folding did not settle after {MAX_SWEEPS} sweeps",
                     code="convert.fold_limit", where=f"graph '{graph.name}'",
                     hint="this is a converter bug; please report it with the model")


def _sweep(graph: Graph) -> bool:
    changed, dirty, i = False, set(), 0
    while i < len(graph.nodes):
        node = graph.nodes[i]
        if dirty.intersection(node.inputs):
            for out in node.outputs:
                if out and graph.tensors[out].data is None:
                    graph.tensors[out].shape = None
                    dirty.add(out)
        if control_flow.expand(graph, i):
            changed = True
            continue                      # the expanded nodes now start at i
        values = evaluate(node, graph)
        if values is not None:
            for name, value in zip(node.outputs, values):
                if name:
                    graph.set_const(name, value)
            del graph.nodes[i]
            changed = True
            continue
        changed |= infer_shapes(node, graph)
        if shapes.fix_ceil_pool(node, graph):
            dirty.add(node.outputs[0])
            changed = True
        i += 1
    if changed:
        graph.remove_unused()
    return changed
