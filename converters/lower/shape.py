"""Data-movement ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Pad,
Identity, Expand, and the ``LayoutTranspose`` that the convert_layout pass inserts.

Axes and pads are ONNX axes; ``ctx.axis`` maps them into the stored layout. Reshape-like ops always
produce ONNX layout; their input may be stored permuted when the permutation only moves size-1
dims (convert_layout checks that), so RESHAPE of the stored bytes is exact.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers


def _reshape(ctx: LowerContext, node) -> None:
    ctx.reshape(ctx.value(node.inputs[0]), ctx.stored_shape(node.outputs[0]),
                out=ctx.output(node.outputs[0]))


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"):
    lowers(_op, since=1)(_reshape)


def _check_expand(node, graph):
    if graph.const(node.inputs[1]) is None:
        return "the target shape is computed at run time"
    return None


@lowers("Expand", since=8, check=_check_expand)
def expand(ctx: LowerContext, node) -> None:
    """Expand to the (folded) output shape: a copy when it only adds leading 1s or changes nothing
    (TF/JAX exporters write ``BroadcastTo`` to a shape the value already has), else BROADCAST_TO,
    which moves bytes and so keeps int8 parameters (``rules.SAME_PARAMS``).
    https://onnx.ai/onnx/operators/onnx__Expand.html"""
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    if int(np.prod(ctx.shape_of(x))) == int(np.prod(ctx.shape_of(y))):
        ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")
        return
    ctx.emit("BROADCAST_TO", [x, ctx.const(np.array(ctx.shape_of(y), np.int32), "shape")], [y])


def _transpose(ctx: LowerContext, src: int, perm, out: int) -> None:
    if list(perm) == list(range(len(perm))):
        ctx.reshape(src, ctx.shape_of(out), out=out, hint="copy")
        return
    ctx.emit("TRANSPOSE", [src, ctx.const(np.array(perm, np.int32), "perm")], [out],
             options("TransposeOptions"))


@lowers("LayoutTranspose", since=1, domain="ganglion")
def layout_transpose(ctx: LowerContext, node) -> None:
    _transpose(ctx, ctx.value(node.inputs[0]), node.attrs["perm"], ctx.output(node.outputs[0]))


@lowers("Transpose", since=1)
def transpose(ctx: LowerContext, node) -> None:
    src, dst = node.inputs[0], node.outputs[0]
    rank = len(ctx.onnx_shape(src))
    cur = ctx.perm(src) or tuple(range(rank))
    out = ctx.perm(dst) or tuple(range(rank))
    t = node.attrs["perm"]
    # stored_out = onnx_in.transpose([t[o] for o in out]); stored_in = onnx_in.transpose(cur)
    _transpose(ctx, ctx.value(src), [cur.index(t[o]) for o in out], ctx.output(dst))


@lowers("Concat", since=1)
def concat(ctx: LowerContext, node) -> None:
    axis = ctx.axis(node.outputs[0], node.attrs["axis"])
    ctx.emit("CONCATENATION", [ctx.value(i) for i in node.inputs if i],
             [ctx.output(node.outputs[0])],
             options("ConcatenationOptions", axis=axis, fusedActivationFunction=ctx.activation(node)))


@lowers("Split", since=1)
def split(ctx: LowerContext, node) -> None:
    axis = ctx.axis(node.inputs[0], node.attrs["axis"])
    sizes = np.array(node.attrs["split"], np.int32)
    outs = [ctx.output(o) for o in node.outputs]
    ctx.emit("SPLIT_V", [ctx.value(node.inputs[0]), ctx.const(sizes, "sizes"),
                         ctx.const(np.array(axis, np.int32), "axis")], outs,
             options("SplitVOptions", numSplits=len(outs)))


def _check_slice(node, graph):
    return None if any(s != 0 for s in node.attrs.get("step", [1])) else "Slice step 0"


@lowers("Slice", since=1, check=_check_slice)
def slice_(ctx: LowerContext, node) -> None:
    name = node.inputs[0]
    rank = len(ctx.onnx_shape(name))
    order = ctx.perm(name) or tuple(range(rank))
    begin = [node.attrs["begin"][a] for a in order]
    end = [node.attrs["end"][a] for a in order]
    step = [node.attrs["step"][a] for a in order]
    end_mask = 0
    for i in range(rank):
        if step[i] < 0 and end[i] < 0:      # "run past index 0": only expressible as a mask
            end_mask |= 1 << i
            end[i] = 0
    ctx.emit("STRIDED_SLICE", [ctx.value(name), ctx.const(np.array(begin, np.int32), "begin"),
                               ctx.const(np.array(end, np.int32), "end"),
                               ctx.const(np.array(step, np.int32), "strides")],
             [ctx.output(node.outputs[0])],
             options("StridedSliceOptions", endMask=end_mask))


def _check_pad(node, graph):
    if node.attrs.get("mode", "constant") not in ("constant", "reflect", "edge"):
        return f"Pad mode '{node.attrs.get('mode')}' is not supported (constant, reflect, edge are)"
    if any(p < 0 for p in node.attrs.get("pads", [])):
        return "negative pads are not supported"
    return None


@lowers("Pad", since=11, check=_check_pad)
def pad(ctx: LowerContext, node) -> None:
    name = node.inputs[0]
    rank = len(ctx.onnx_shape(name))
    pads = node.attrs["pads"]
    order = ctx.perm(name) or tuple(range(rank))
    table = np.array([[pads[a], pads[rank + a]] for a in order], np.int32)
    x, y = ctx.value(name), ctx.output(node.outputs[0])
    mode, value = node.attrs.get("mode", "constant"), float(node.attrs.get("value", 0.0))
    if mode == "reflect":
        ctx.emit("MIRROR_PAD", [x, ctx.const(table, "paddings")], [y],
                 options("MirrorPadOptions", mode=0))   # MirrorPadMode.REFLECT
    elif mode == "edge":
        _edge_pad(ctx, x, y, table)
    elif value == 0.0:
        ctx.emit("PAD", [x, ctx.const(table, "paddings")], [y], options("PadOptions"))
    else:
        ctx.emit("PADV2", [x, ctx.const(table, "paddings"),
                           ctx.const(np.array(value, np.float32), "value")], [y],
                 options("PadV2Options"))


def _edge_pad(ctx: LowerContext, x: int, y: int, table: np.ndarray) -> None:
    """ONNX ``edge`` (repeat the border value) as MIRROR_PAD SYMMETRIC steps of at most one element
    per side: a symmetric pad of width 1 copies the border, so k steps repeat it k times (TFLite has
    no edge mode; Caffe ports pad this way before ceil-mode pools)."""
    cur, left = x, table.copy()
    while left.any():
        step = np.minimum(left, 1)
        left -= step
        out = y if not left.any() else ctx.temp(np.add(ctx.shape_of(cur), step.sum(axis=1)), "edge_padded")
        ctx.emit("MIRROR_PAD", [cur, ctx.const(step, "paddings")], [out],
                 options("MirrorPadOptions", mode=1))   # MirrorPadMode.SYMMETRIC
        cur = out


def _check_cast(node, graph):
    src, dst = graph.tensors[node.inputs[0]].dtype, graph.tensors[node.outputs[0]].dtype
    allowed = {np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.bool_)}
    if src not in allowed or dst not in allowed:
        return f"Cast {src} -> {dst} is not supported"
    return None


@lowers("Cast", since=1, check=_check_cast)
def cast(ctx: LowerContext, node) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    if ctx.t.tensors[x].dtype == ctx.t.tensors[y].dtype:   # exporters emit float -> float casts
        ctx.reshape(x, ctx.shape_of(y), out=y, hint="copy")
    else:
        ctx.emit("CAST", [x], [y])


def _check_gather(node, graph):
    idx = graph.tensors[node.inputs[1]]
    if graph.const(node.inputs[1]) is None and np.dtype(idx.dtype) not in (np.int32, np.int64):
        return f"Gather indices of type {idx.dtype} are not supported (int32/int64 only)"
    return None


@lowers("Gather", since=1, check=_check_gather)
def gather(ctx: LowerContext, node) -> None:
    """GATHER along one axis. Constant indices are wrapped here; run-time indices (token ids of an
    embedding lookup) go through ``_runtime_indices``. In int8 GATHER ties the table (a constant
    ``word_embeddings``, quantized per-tensor) to its output's parameters (``rules.SAME_PARAMS``).
    https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/kernels/gather.cc"""
    name = node.inputs[0]
    dim = ctx.onnx_shape(name)[node.attrs["axis"]]
    const = ctx.g.const(node.inputs[1])
    if const is not None:
        indices = ctx.const((const.astype(np.int64) % dim).astype(np.int32), "indices")
    else:
        indices = _runtime_indices(ctx, node.inputs[1], dim)
    ctx.emit("GATHER", [ctx.value(name), indices], [ctx.output(node.outputs[0])],
             options("GatherOptions", axis=ctx.axis(name, node.attrs["axis"])))


def _runtime_indices(ctx: LowerContext, name: str, dim: int) -> int:
    """int32 indices in [0, dim): CAST int64 ids to int32, then FLOOR_MOD by ``dim``.

    ONNX Gather accepts negative indices in [-dim, -1] (counted from the end); TFLite's GATHER
    reads them out of bounds (an error). FLOOR_MOD maps -1 to dim-1 in one small int op; an
    index >= dim, an error in ONNX, wraps around instead of failing.
    https://onnx.ai/onnx/operators/onnx__Gather.html"""
    idx = ctx.value(name)
    if ctx.t.tensors[idx].dtype != "int32":
        cast = ctx.temp(ctx.shape_of(idx), "indices_int32", "int32")
        ctx.emit("CAST", [idx], [cast])
        idx = cast
    wrapped = ctx.temp(ctx.shape_of(idx), "indices_wrapped", "int32")
    ctx.emit("FLOOR_MOD", [idx, ctx.const(np.array(dim, np.int32), "dim")], [wrapped])
    return wrapped


def _check_depth_to_space(node, graph):
    if len(graph.tensors[node.inputs[0]].shape) != 4:
        return "only 4-D inputs are supported"
    return None


@lowers("SpaceToDepth", since=1, check=_check_depth_to_space)
def space_to_depth(ctx: LowerContext, node) -> None:
    # ONNX SpaceToDepth orders channels (block_y, block_x, c), exactly like TFLite's NHWC op.
    ctx.emit("SPACE_TO_DEPTH", [ctx.value(node.inputs[0])], [ctx.output(node.outputs[0])],
             options("SpaceToDepthOptions", blockSize=int(node.attrs["blocksize"])))


@lowers("DepthToSpace", since=1, check=_check_depth_to_space)
def depth_to_space(ctx: LowerContext, node) -> None:
    """DCR mode is TFLite's DEPTH_TO_SPACE; CRD (channel-major) first regroups the channels."""
    b = int(node.attrs["blocksize"])
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    if node.attrs.get("mode", "DCR") == "CRD":
        n, h, w, c = ctx.shape_of(x)
        # channel index c_out*b*b + by*b + bx  ->  (by*b + bx)*c_out + c_out
        parts = ctx.reshape(x, [n, h, w, c // (b * b), b * b], hint="crd")
        moved = ctx.temp([n, h, w, b * b, c // (b * b)], "dcr")
        ctx.emit("TRANSPOSE", [parts, ctx.const(np.array([0, 1, 2, 4, 3], np.int32), "perm")], [moved],
                 options("TransposeOptions"))
        x = ctx.reshape(moved, [n, h, w, c], hint="dcr_flat")
    ctx.emit("DEPTH_TO_SPACE", [x], [y], options("DepthToSpaceOptions", blockSize=b))
