"""LSTM, GRU and RNN, unrolled over their static sequence length (plumbing in ``unroll.py``).

Why unrolled and not LiteRT's UNIDIRECTIONAL_/BIDIRECTIONAL_SEQUENCE_LSTM (measured in
``bench/recurrent_bench.py``, figures in docs/converter-internals.md "Recurrent layers"): the
builtin keeps its state in *variable* tensors that persist across invocations (an ONNX LSTM starts
every call from initial_h/initial_c), XNNPACK does not take it, its int8 form is a separate
16-bit-cell integer kernel with its own intermediate-tensor parameters, and GRU and RNN have no
builtin at all. The unrolled ops are FULLY_CONNECTED, ADD, SUB, MUL, SPLIT, LOGISTIC, TANH, RELU,
CONCATENATION and RESHAPE: XNNPACK runs them and the existing int8 machinery quantizes them
(per-step ranges measured by ``tflite/ranges.py``).

Gate equations: https://onnx.ai/onnx/operators/onnx__LSTM.html, onnx__GRU.html, onnx__RNN.html.
Supported: forward / reverse / bidirectional, initial states (inputs or constants), layout 0 and
1, activations Sigmoid / Tanh / Relu, clip, LSTM peepholes and input_forget, GRU
linear_before_reset 0 and 1, sequence_lens absent or a constant equal to the sequence length.
A state is a tensor index, a numpy constant, or None (zero). In an int8 conversion these nodes
stay float unless ``TFLiteOptions.int8_recurrent`` (``tflite/__init__.py``; the measured why is in
the docs section).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.lower import unroll
from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers

# Unrolled steps per node: a 2-layer bidirectional LSTM of MAX_STEPS steps is ~8,000 ops and
# converts in seconds; past it the graph (and the range measurement) grows without bound.
MAX_STEPS = 512
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATIONS = {"sigmoid": "LOGISTIC", "tanh": "TANH", "relu": "RELU"}
_BINARY = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}


@dataclass(frozen=True)
class _Spec:
    hidden: int
    directions: int
    reverse_only: bool
    activations: tuple[tuple[str, ...], ...]    # per direction, ONNX order (f, g[, h])
    clip: float | None

    @classmethod
    def of(cls, node, w: np.ndarray) -> "_Spec":
        direction = node.attrs.get("direction", "forward")
        dirs = 2 if direction == "bidirectional" else 1
        n = len(DEFAULT_ACTIVATIONS[node.op])
        acts = [a.lower() for a in node.attrs.get("activations") or DEFAULT_ACTIVATIONS[node.op] * dirs]
        clip = node.attrs.get("clip")
        return cls(w.shape[1] // GATES[node.op], dirs, direction == "reverse",
                   tuple(tuple(acts[d * n:(d + 1) * n]) for d in range(dirs)),
                   float(clip) if clip is not None else None)


def _check(node, graph) -> str | None:
    for pos, what in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
        name = node.input(pos)
        if name and graph.const(name) is None:
            return f"{what} must be a constant (exported weights are initializers)"
    x_shape = graph.tensors[node.inputs[0]].shape
    steps = x_shape[1] if node.attrs.get("layout", 0) else x_shape[0]
    lens = graph.const(node.input(4)) if node.input(4) else None
    if node.input(4) and (lens is None or np.any(lens != steps)):
        return (f"sequence_lens must be a constant equal to the sequence length {steps} "
                "(padded batches of shorter sequences are not supported: export one length per call)")
    acts = node.attrs.get("activations") or ()
    unknown = sorted({a for a in acts if a.lower() not in ACTIVATIONS})
    if unknown:
        return f"activation(s) {', '.join(unknown)} not supported (Sigmoid, Tanh, Relu are)"
    if steps > MAX_STEPS:
        return (f"{steps} time steps: recurrent layers are unrolled up to {MAX_STEPS} steps; "
                f"pin a shorter sequence with --input-shape or run the model on chunks")
    return None


@lowers("LSTM", since=7, check=_check)
@lowers("GRU", since=7, check=_check)
@lowers("RNN", since=7, check=_check)
def recurrent(ctx: LowerContext, node) -> None:
    w, r = ctx.g.const(node.inputs[1]).astype(np.float32), ctx.g.const(node.inputs[2]).astype(np.float32)
    spec = _Spec.of(node, w)
    gates_h = w.shape[1]
    b = ctx.g.const(node.input(3))
    b = np.zeros((spec.directions, 2 * gates_h), np.float32) if b is None else b.astype(np.float32)
    p = ctx.g.const(node.input(7)) if node.op == "LSTM" else None
    h0 = unroll.initial_state(ctx, node, 5, spec.directions, spec.hidden)
    c0 = unroll.initial_state(ctx, node, 6, spec.directions, spec.hidden)
    flat, steps = unroll.flat_input(ctx, node)
    hs, finals_h, finals_c = [], [], []
    for d in range(spec.directions):
        wb, rb = b[d, :gates_h], b[d, gates_h:]
        x_bias = wb + rb
        if node.op == "GRU" and node.attrs.get("linear_before_reset", 0):
            x_bias[2 * spec.hidden:] = wb[2 * spec.hidden:]     # Rbh is multiplied by r_t
        xs = unroll.step_inputs(ctx, flat, steps, w[d], x_bias)
        cell = _Cell(ctx, node, spec, d, r[d], rb, None if p is None else p[d].astype(np.float32))
        h, c, seq = h0[d], c0[d], [None] * steps
        reverse = spec.reverse_only or d == 1
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            h, c = cell.step(xs[t], h, c)
            seq[t] = h
        hs.append(seq)
        finals_h.append(h)
        finals_c.append(c)
    for index, stack, value in ((0, unroll.stack_sequence, hs), (1, unroll.stack_final, finals_h),
                                (2, unroll.stack_final, finals_c)):
        name = unroll.wanted(ctx, node, index)
        if name:
            stack(ctx, node, value, name)


class _Cell:
    """One direction's step function: ``step(x_t, h, c) -> (h, c)`` emits the ops of one step."""

    def __init__(self, ctx, node, spec: _Spec, d: int, r: np.ndarray, rb: np.ndarray, p):
        self.ctx, self.node, self.spec, self.r, self.rb, self.p = ctx, node, spec, r, rb, p
        self.acts = spec.activations[d]
        self.step = {"LSTM": self._lstm, "GRU": self._gru, "RNN": self._rnn}[node.op]
        hidden = spec.hidden
        # GRU with linear_before_reset=0 applies R_zr to H_{t-1} and R_h to r * H_{t-1}
        self.parts = {"all": r, "zr": r[:2 * hidden], "h": r[2 * hidden:]}
        self.weights: dict[str, int] = {}       # one tensor per recurrent weight, shared by every step

    # -- small emitters (operands: tensor index, numpy constant or None for zero; ``role`` names
    #    the new tensor, e.g. "<node>/f_c__17" for f * C_{t-1}, so per-layer reports read well) --
    def _bin(self, op: str, a, b, role: str):
        ctx = self.ctx
        a, b = (ctx.const(v, "c") if isinstance(v, np.ndarray) else v for v in (a, b))
        shape = np.broadcast_shapes(ctx.shape_of(a), ctx.shape_of(b))
        return ctx.emit_new(op, [a, b], shape, options(_BINARY[op]), hint=role)

    def _add(self, a, b, role: str):
        return a if b is None else b if a is None else self._bin("ADD", a, b, role)

    def _act(self, x, which: int, role: str, clip: bool = True):
        x = self._clip(x, role) if clip else x
        return self.ctx.emit_new(ACTIVATIONS[self.acts[which]], [x], self.ctx.shape_of(x), hint=role)

    def _clip(self, x, role: str):
        """ONNX ``clip`` bounds the input of every activation to [-clip, clip]."""
        if self.spec.clip is None:
            return x
        ctx, c = self.ctx, np.float32(self.spec.clip)
        lo = ctx.emit_new("MAXIMUM", [x, ctx.const(np.array(-c), "clip_lo")], ctx.shape_of(x), hint="clip")
        return ctx.emit_new("MINIMUM", [lo, ctx.const(np.array(c), "clip_hi")], ctx.shape_of(x), hint="clip")

    def _recurrent(self, h, part: str, bias: np.ndarray | None = None):
        """h R^T (+ bias) for R = ``self.parts[part]``: FULLY_CONNECTED, a constant for a
        constant state, None for zero."""
        r = self.parts[part]
        bias = np.zeros(r.shape[0], np.float32) if bias is None else bias.astype(np.float32)
        if h is None:
            return bias if np.any(bias) else None
        if isinstance(h, np.ndarray):
            return (h @ r.T + bias).astype(np.float32)
        ctx = self.ctx
        out = ctx.temp([ctx.shape_of(h)[0], r.shape[0]], "h_proj")
        if part not in self.weights:
            self.weights[part] = ctx.const(np.ascontiguousarray(r), "r")
        ctx.emit("FULLY_CONNECTED", [h, self.weights[part], ctx.const(bias, "rb")],
                 [out], options("FullyConnectedOptions", keepNumDims=False))
        return out

    def _split(self, value, parts: int) -> list:
        if value is None:
            return [None] * parts
        if isinstance(value, np.ndarray):
            return [v if np.any(v) else None for v in np.split(value, parts, axis=-1)]
        return unroll.split(self.ctx, value, 1, parts, "gate")

    # -- cells ---------------------------------------------------------------------------------
    def _rnn(self, x, h, c):
        return self._act(self._add(x, self._recurrent(h, "all"), "pre"), 0, "h"), None

    def _lstm(self, x, h, c):
        hidden = self.spec.hidden
        i, o, f, g = self._split(self._add(x, self._recurrent(h, "all"), "pre"), 4)
        p = self.p if self.p is not None and np.any(self.p) else None
        if p is not None and c is not None:        # peepholes read C_{t-1} for i and f ...
            i = self._add(i, self._bin("MUL", c, p[:hidden], "p_i"), "i_pre")
        i = self._act(i, 0, "i")
        if self.node.attrs.get("input_forget", 0):  # coupled gates: f = 1 - i (as onnxruntime)
            f = self._bin("SUB", np.ones(hidden, np.float32), i, "f")
        else:
            if p is not None and c is not None:
                f = self._add(f, self._bin("MUL", c, p[2 * hidden:], "p_f"), "f_pre")
            f = self._act(f, 0, "f")
        c_new = self._bin("MUL", i, self._act(g, 1, "g"), "i_g")
        if c is not None:
            c_new = self._bin("ADD", self._bin("MUL", f, c, "f_c"), c_new, "c")
        if p is not None:                          # ... and o reads C_t
            o = self._add(o, self._bin("MUL", c_new, p[hidden:2 * hidden], "p_o"), "o_pre")
        # clip bounds the gates' inputs only, not C_t on its way into h (as onnxruntime computes)
        return self._bin("MUL", self._act(o, 0, "o"), self._act(c_new, 2, "h_c", clip=False), "h"), c_new

    def _gru(self, x, h, c):
        hidden, lbr = self.spec.hidden, self.node.attrs.get("linear_before_reset", 0)
        xz, xr, xh = self._split(x, 3)
        if lbr:
            rz, rr, rh = self._split(self._recurrent(h, "all", np.concatenate(
                [np.zeros(2 * hidden, np.float32), self.rb[2 * hidden:]])), 3)
        else:
            rz, rr = self._split(self._recurrent(h, "zr"), 2)
        z = self._act(self._add(xz, rz, "z_pre"), 0, "z")
        r = self._act(self._add(xr, rr, "r_pre"), 0, "r")
        if lbr:
            cand = self._add(xh, None if rh is None else self._bin("MUL", r, rh, "r_rh"), "cand_pre")
        else:
            cand = self._add(xh, None if h is None else
                             self._recurrent(self._bin("MUL", r, h, "r_h"), "h"), "cand_pre")
        cand = self._act(cand, 1, "cand")
        if h is None:                              # H_t = (1 - z) * h~ + z * H_{t-1}
            return self._bin("SUB", cand, self._bin("MUL", z, cand, "z_d"), "h"), None
        return self._bin("ADD", cand, self._bin("MUL", z, self._bin("SUB", h, cand, "d"), "z_d"), "h"), None
