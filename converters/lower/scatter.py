"""ScatterND and ScatterElements with constant indices, as one GATHER over the two operands.

PyTorch exports slice assignment (``cache[:, :, -k:] = x``, the ring buffers of streaming audio
models such as GTCRN) as ScatterND with constant indices. With the indices known, every output
element is a fixed element of either ``data`` or ``updates``, so the op is

    RESHAPE(data, [-1]) ++ RESHAPE(updates, [-1])  -> CONCATENATION  -> GATHER(constant map) -> RESHAPE

The map is computed by applying the scatter to element ids (``data`` ids 0..N-1, ``updates`` ids
N..N+M-1), so it follows the spec exactly, last write winning for repeated indices
(https://onnx.ai/onnx/operators/onnx__ScatterND.html, onnx__ScatterElements.html). Every op is
data movement: in int8 they share one scale (the concatenation's), no arithmetic is rounded.
Run-time indices and the reductions (add, mul, max, min) are refused with the reason.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers


def _check_scatter(node, graph):
    if graph.const(node.inputs[1]) is None:
        return "indices computed at run time are not supported (constant indices are)"
    if node.attrs.get("reduction", "none") != "none":
        return f"reduction '{node.attrs['reduction']}' is not supported (only 'none')"
    return None


def _scatter_nd(ids: np.ndarray, indices: np.ndarray, upd: np.ndarray, node) -> None:
    for j in np.ndindex(*indices.shape[:-1]):
        ids[tuple(int(i) for i in indices[j])] = upd[j]


def _scatter_elements(ids: np.ndarray, indices: np.ndarray, upd: np.ndarray, node) -> None:
    axis = node.attrs.get("axis", 0) % ids.ndim
    np.put_along_axis(ids, np.where(indices < 0, indices + ids.shape[axis], indices), upd, axis)


def _onnx_order_ids(ctx: LowerContext, name: str, offset: int) -> np.ndarray:
    """For each element of ONNX tensor ``name`` (ONNX layout), its position in the flattened
    stored tensor plus ``offset``."""
    perm = ctx.perm(name)
    ids = np.arange(int(np.prod(ctx.onnx_shape(name))), dtype=np.int64).reshape(ctx.stored_shape(name))
    return (ids.transpose(np.argsort(perm)) if perm else ids) + offset


def _lower(ctx: LowerContext, node, apply) -> None:
    data, _, updates = node.inputs[:3]
    n_data = int(np.prod(ctx.onnx_shape(data)))
    ids = _onnx_order_ids(ctx, data, 0)
    apply(ids, ctx.g.const(node.inputs[1]).astype(np.int64), _onnx_order_ids(ctx, updates, n_data), node)
    out = node.outputs[0]
    perm = ctx.perm(out)
    table = (ids.transpose(perm) if perm else ids).reshape(-1).astype(np.int32)    # stored order
    flat = [ctx.reshape(ctx.value(x), [int(np.prod(ctx.onnx_shape(x)))], hint="flat") for x in (data, updates)]
    both = ctx.emit_new("CONCATENATION", flat, [n_data + int(np.prod(ctx.onnx_shape(updates)))],
                        options("ConcatenationOptions", axis=0), hint="both")
    picked = ctx.emit_new("GATHER", [both, ctx.const(table, "map")], [table.size],
                          options("GatherOptions", axis=0), hint="scattered")
    ctx.reshape(picked, ctx.stored_shape(out), out=ctx.output(out))


@lowers("ScatterND", since=11, check=_check_scatter)
def scatter_nd(ctx: LowerContext, node) -> None:
    _lower(ctx, node, _scatter_nd)


@lowers("ScatterElements", since=11, check=_check_scatter)
def scatter_elements(ctx: LowerContext, node) -> None:
    _lower(ctx, node, _scatter_elements)
