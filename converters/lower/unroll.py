"""The time-step plumbing shared by the unrolled LSTM, GRU and RNN lowerings (``recurrent.py``).

An ONNX recurrent node is unrolled over its (static) sequence length into ops that LiteRT's
XNNPACK delegate runs and that the int8 machinery quantizes like any other graph:

* the input projection of every step at once: one FULLY_CONNECTED per direction over the
  [T*B, I] input (bias = every bias that does not depend on the state), then one SPLIT into the
  T per-step rows [B, G*H];
* per step, the cell (``recurrent.py``): a FULLY_CONNECTED of the previous state by R, ADD,
  SPLIT into gates, LOGISTIC / TANH / RELU, MUL, ADD;
* the outputs stacked back: CONCATENATION of the per-step states, RESHAPE (and TRANSPOSE for
  layout=1 with a batch > 1) into Y [T, D, B, H] / [B, T, D, H], Y_h and Y_c [D, B, H] / [B, D, H].

Layout 0 is time-major: X [T, B, I], states [D, B, H]; layout 1 is batch-major: X [B, T, I],
states [B, D, H] (https://onnx.ai/onnx/operators/onnx__LSTM.html). A state that is a constant
zero (or absent) is ``None``: the first step then skips its recurrent FULLY_CONNECTED.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options


def flat_input(ctx: LowerContext, node) -> tuple[int, int]:
    """(X as [T*B, I] with the rows of a step together, T)."""
    x = node.inputs[0]
    layout = node.attrs.get("layout", 0)
    shape = ctx.onnx_shape(x)
    steps, batch = (shape[1], shape[0]) if layout else (shape[0], shape[1])
    src = ctx.value(x)
    if layout and batch > 1:                      # [B, T, I] -> [T, B, I]: rows grouped by step
        src = ctx.emit_new("TRANSPOSE", [src, ctx.const(np.array([1, 0, 2], np.int32), "perm")],
                           [steps, batch, shape[2]], options("TransposeOptions"), hint="time_major")
    return ctx.reshape(src, [steps * batch, shape[2]], hint="x_2d"), steps


def step_inputs(ctx: LowerContext, flat: int, steps: int, w: np.ndarray, bias: np.ndarray) -> list[int]:
    """The input projection X_t W^T + bias of every step, in time order: T tensors [B, rows]."""
    proj = ctx.temp([ctx.shape_of(flat)[0], w.shape[0]], "x_proj")
    ctx.emit("FULLY_CONNECTED", [flat, ctx.const(np.ascontiguousarray(w, np.float32), "w"),
                                 ctx.const(np.asarray(bias, np.float32), "b")], [proj],
             options("FullyConnectedOptions", keepNumDims=False))
    return split(ctx, proj, 0, steps, "x_t")


def split(ctx: LowerContext, src: int, axis: int, parts: int, hint: str) -> list[int]:
    """SPLIT ``src`` into ``parts`` equal pieces along ``axis`` (no op when ``parts`` is 1)."""
    if parts == 1:
        return [src]
    shape = list(ctx.shape_of(src))
    shape[axis] //= parts
    outs = [ctx.temp(shape, f"{hint}{k}") for k in range(parts)]
    ctx.emit("SPLIT", [ctx.const(np.array(axis, np.int32), "axis"), src], outs,
             options("SplitOptions", numSplits=parts))
    return outs


def initial_state(ctx: LowerContext, node, index: int, directions: int, hidden: int) -> list:
    """Per direction, the [B, H] initial state from input ``index`` (initial_h / initial_c):
    a tensor index, a numpy constant, or None for zero (absent or all-zero constant)."""
    name = node.input(index)
    layout = node.attrs.get("layout", 0)
    if not name:
        return [None] * directions
    const = ctx.g.const(name)
    if const is not None:
        const = const.astype(np.float32)
        per_dir = [np.take(const, d, axis=1 if layout else 0) for d in range(directions)]
        return [None if not np.any(c) else c for c in per_dir]
    shape = ctx.onnx_shape(name)
    batch = shape[0] if layout else shape[1]
    pieces = split(ctx, ctx.value(name), 1 if layout else 0, directions, "state")
    return [ctx.reshape(p, [batch, hidden], hint="state_2d") for p in pieces]


def wanted(ctx: LowerContext, node, index: int) -> str:
    """The name of output ``index`` when something reads it (a graph output or a consumer)."""
    name = node.outputs[index] if index < len(node.outputs) else ""
    if not name:
        return ""
    read = name in ctx.g.outputs or any(name in n.inputs for n in ctx.g.nodes)
    return name if read else ""


def stack_sequence(ctx: LowerContext, node, states: list[list[int]], out_name: str) -> None:
    """Y from the per-direction, per-step states ``states[d][t]`` ([B, H] each)."""
    directions, steps = len(states), len(states[0])
    batch, hidden = ctx.shape_of(states[0][0])
    pieces = [states[d][t] for t in range(steps) for d in range(directions)]   # [T, D, B, H] order
    y = ctx.output(out_name)
    if node.attrs.get("layout", 0) and batch > 1:
        time_major = _concat_reshape(ctx, pieces, [steps, directions, batch, hidden])
        ctx.emit("TRANSPOSE", [time_major, ctx.const(np.array([2, 0, 1, 3], np.int32), "perm")], [y],
                 options("TransposeOptions"))
        return
    _concat_reshape(ctx, pieces, ctx.shape_of(y), out=y)   # batch 1: [B, T, D, H] has the same bytes


def stack_final(ctx: LowerContext, node, finals: list[int], out_name: str) -> None:
    """Y_h / Y_c from each direction's last state [B, H]: [D, B, H], or [B, D, H] for layout 1."""
    y = ctx.output(out_name)
    axis = 1 if node.attrs.get("layout", 0) else 0
    _concat_reshape(ctx, finals, ctx.shape_of(y), out=y, axis=axis)


def _concat_reshape(ctx: LowerContext, pieces: list[int], shape, out: int | None = None,
                    axis: int = 0) -> int:
    if len(pieces) == 1:
        return ctx.reshape(pieces[0], shape, out=out, hint="stack")
    rows = list(ctx.shape_of(pieces[0]))
    rows[axis] *= len(pieces)
    joined = ctx.emit_new("CONCATENATION", pieces, rows, options("ConcatenationOptions", axis=axis),
                          hint="stack")
    return ctx.reshape(joined, shape, out=out, hint="stack")
