"""Turn a one-hot embedding (``MatMul(Cast(Equal(ids, iota)), table)``) into one Gather.

JAX's ``jax.nn.one_hot`` and Keras' ``tf.one_hot`` + ``Dense`` export an embedding lookup as a
comparison of the integer ids (last axis 1) with a constant ``arange(K)``, a Cast of the boolean
result to float, and a MatMul with the ``[K, D]`` table (Google's magika file-type model does this
on 2048 byte tokens). In int8 that MatMul multiplies a huge 0/1 tensor by a per-tensor table and
EQUAL has no int8 kernel; a Gather of the table rows is exact, int8-native (GATHER shares the
table's parameters, ``tflite/rules.SAME_PARAMS``) and K times cheaper.

The one-hot row of an id outside ``[0, K)`` is all zeros: the table gets one zero row appended
and the ids are clamped into ``[-1, K]`` (Max, Min), so -1 and K both read that row (GATHER's
lowering wraps -1 to the last row, ``lower/shape._runtime_indices``).
https://onnx.ai/onnx/operators/onnx__Equal.html, https://onnx.ai/onnx/operators/onnx__Gather.html
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node, Tensor


def _iota(graph: Graph, name: str) -> int | None:
    """K when ``name`` is a constant integer ``arange(K)`` along its last axis (other axes 1)."""
    value = graph.const(name)
    if value is None or not np.issubdtype(value.dtype, np.integer) or value.ndim == 0:
        return None
    if any(d != 1 for d in value.shape[:-1]):
        return None
    k = value.shape[-1]
    return k if k > 1 and np.array_equal(value.reshape(-1), np.arange(k)) else None


def _match(graph: Graph, mm: Node, producers) -> tuple[str, np.ndarray] | None:
    """(ids, table) when ``mm`` multiplies a one-hot of integer ids by a constant [K, D] table."""
    table = graph.const(mm.inputs[1])
    cast = producers.get(mm.inputs[0])
    if table is None or table.ndim != 2 or cast is None or cast.op != "Cast":
        return None
    if graph.tensors[cast.outputs[0]].dtype != np.float32:
        return None
    eq = producers.get(cast.inputs[0])
    if eq is None or eq.op != "Equal":
        return None
    for ids, other in (eq.inputs, eq.inputs[::-1]):
        k = _iota(graph, other)
        t = graph.tensors[ids]
        if k != table.shape[0] or t.is_const or not np.issubdtype(t.dtype, np.integer):
            continue
        if t.shape[-1:] == (1,) and t.shape[:-1] == graph.tensors[mm.inputs[0]].shape[:-1]:
            return ids, table
    return None


def _gather(graph: Graph, mm: Node, ids: str, table: np.ndarray) -> list[Node]:
    k, dtype = table.shape[0], graph.tensors[ids].dtype
    lead = graph.tensors[ids].shape[:-1]
    flat, low, clamped = (graph.fresh(f"{mm.name}/{h}") for h in ("ids", "ids_min", "ids_clamped"))
    for name in (flat, low, clamped):
        graph.tensors[name] = Tensor(name, tuple(lead), dtype)
    padded = graph.add_const(f"{mm.name}/table", np.concatenate([table, np.zeros((1, table.shape[1]), table.dtype)]))
    shape = graph.add_const(f"{mm.name}/ids_shape", np.array(lead, np.int64))
    return [Node("Reshape", f"{mm.name}/ids", [ids, shape], [flat], {"allowzero": 0}),
            Node("Max", f"{mm.name}/ids_min", [flat, graph.add_const("minus_one", np.array(-1, dtype))], [low]),
            Node("Min", f"{mm.name}/ids_clamped", [low, graph.add_const("k", np.array(k, dtype))], [clamped]),
            Node("Gather", f"{mm.name}/gather", [padded, clamped], list(mm.outputs), {"axis": 0})]


def run(graph: Graph) -> bool:
    changed = False
    for mm in [n for n in graph.nodes if n.op == "MatMul"]:
        found = _match(graph, mm, graph.producers())
        if found is None:
            continue
        at = graph.nodes.index(mm)
        graph.nodes[at:at + 1] = _gather(graph, mm, *found)
        changed = True
    if changed:
        graph.remove_unused()
    return changed
