"""The pattern side of ``fuse_normalization``: read a normalization's statistics off the graph.

``Matcher.statistics(root)`` starts at a ``Sqrt`` (or ``Pow(r, +-0.5)``) and walks back to the
tensor ``x``, the reduced axes, epsilon and whether ``x`` is centered; ``Matcher.outputs`` walks
forward to the nodes that produce the normalized value (and a constant gamma on the way). Every
statistic must broadcast against ``x`` the way a ``keepdims`` reduction would (``_aligned``), so
a reshape that moves a statistic onto other axes stops the match instead of being rewritten.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converters.ir import Graph, Node

# value-preserving ops a statistic passes through on its way back to full shape
PASS_THROUGH = {"Reshape", "Squeeze", "Unsqueeze", "Identity", "Expand"}
RTOL = 1e-3       # 1/N written as a float32 constant


@dataclass(frozen=True)
class Stat:
    x: str
    axes: tuple[int, ...]
    eps: float
    center: bool
    centered: str | None = None     # the tensor x - mean(x) the variance squares (centered form)
    l2: bool = False                # x / max(||x||_2, eps) (F.normalize) instead of a variance


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


class Matcher:
    def __init__(self, graph: Graph):
        self.g = graph
        self.prod = graph.producers()
        self.cons = graph.consumers()

    # --- small readers ---------------------------------------------------------------------------
    def shape(self, t: str):
        return self.g.tensors[t].shape

    def scalar(self, t: str) -> float | None:
        value = self.g.const(t)
        if value is None or value.size != 1:
            return None
        return float(np.asarray(value).reshape(-1)[0])

    def op(self, t: str) -> Node | None:
        return self.prod.get(t)

    def peel(self, t: str) -> str:
        """Back through reshapes that only add or drop size-1 dims, and Expand."""
        while True:
            n = self.prod.get(t)
            if n is None or n.op not in PASS_THROUGH:
                return t
            src = n.inputs[0]
            if n.op != "Expand" and _squeezed(self.shape(src)) != _squeezed(self.shape(t)):
                return t
            t = src

    def unguard(self, t: str) -> str:
        """Back through pass-through ops and ``Max(v, c <= 0)`` guards."""
        while True:
            t = self.peel(t)
            n = self.prod.get(t)
            if n is None or n.op != "Max" or len(n.inputs) != 2:
                return t
            consts = [self.scalar(i) for i in n.inputs]
            k = next((k for k, c in enumerate(consts) if c is not None and c <= 0.0), None)
            if k is None:
                return t
            t = n.inputs[1 - k]

    def aligned(self, stat: str, x: str, axes) -> bool:
        """True when ``stat`` broadcasts against ``x`` as a keepdims reduction over ``axes``."""
        xs, ss = self.shape(x), self.shape(stat)
        if ss is None or len(ss) > len(xs):
            return False
        ss = (1,) * (len(xs) - len(ss)) + tuple(ss)
        return all(s in (1, d) if i in axes else (s == d or d == 1) for i, (s, d) in enumerate(zip(ss, xs)))

    # --- reductions ------------------------------------------------------------------------------
    def axes_of(self, n: Node) -> tuple[str, tuple[int, ...]] | None:
        y = n.inputs[0]
        rank = len(self.shape(y))
        axes = n.attrs.get("axes")
        if not axes:
            if n.attrs.get("noop_with_empty_axes", 0):
                return None
            axes = range(rank)
        return y, tuple(sorted(int(a) % rank for a in axes))

    def _sum_scaled(self, n: Node):
        """(sum node, y, axes) for ``ReduceSum(y) * 1/N`` or ``ReduceSum(y) / N``, else None."""
        pairs = [(0, 1), (1, 0)] if n.op == "Mul" else [(0, 1)] if n.op == "Div" else []
        for a, b in pairs:
            c, s = self.scalar(n.inputs[b]), self.prod.get(n.inputs[a])
            if c is None or c == 0.0 or s is None or s.op not in ("ReduceSum", "ReduceSumSquare"):
                continue
            found = self.axes_of(s)
            if found is None:
                continue
            count = math.prod(self.shape(found[0])[i] for i in found[1])
            if abs((c * count if n.op == "Mul" else count / c) - 1.0) < RTOL:
                return s, *found
        return None

    def mean(self, t: str):
        """(y, axes) when ``t`` is the mean of ``y`` over ``axes``."""
        n = self.prod.get(self.peel(t))
        if n is None:
            return None
        if n.op == "ReduceMean":
            return self.axes_of(n)
        found = self._sum_scaled(n)
        return None if found is None or found[0].op != "ReduceSum" else found[1:]

    def square_of(self, t: str) -> str | None:
        n = self.prod.get(t)
        if n is not None and n.op == "Mul" and n.inputs[0] == n.inputs[1]:
            return n.inputs[0]
        if n is not None and n.op == "Pow" and self.scalar(n.inputs[1]) == 2.0:
            return n.inputs[0]
        return None

    def mean_square(self, t: str):
        """(y, axes) when ``t`` is the mean of ``y * y`` over ``axes``."""
        n = self.prod.get(self.peel(t))
        if n is not None and n.op in ("Mul", "Div"):
            found = self._sum_scaled(n)
            if found is not None and found[0].op == "ReduceSumSquare":
                return found[1:]
        found = self.mean(t)
        if found is None:
            return None
        y = self.square_of(found[0])
        return None if y is None else (y, found[1])

    def is_mean_of(self, t: str, x: str, axes) -> bool:
        return self.mean(t) == (x, tuple(axes)) and self.aligned(t, x, axes)

    # --- the statistics --------------------------------------------------------------------------
    def variance(self, t: str):
        """(x, axes, center, centered tensor) of a variance in one of the module's forms."""
        t = self.unguard(t)
        n = self.prod.get(t)
        if n is not None and n.op == "Sub":        # moments: mean(x^2) - mean(x)^2
            second, first = self.mean_square(n.inputs[0]), self.square_of(self.peel(n.inputs[1]))
            # both statistics reduced alike: the Sub broadcasts neither
            same = self.shape(n.inputs[0]) == self.shape(n.inputs[1]) == self.shape(n.outputs[0])
            if second is not None and first is not None and same and self.mean(first) == second:
                return (*second, True, None)
            return None
        found = self.mean_square(t)
        if found is None:
            return None
        y, axes = found
        d = self.prod.get(y)
        if d is not None and d.op == "Sub" and self.is_mean_of(d.inputs[1], d.inputs[0], axes):
            return d.inputs[0], axes, True, y
        return y, axes, False, None

    def statistics(self, root: Node) -> Stat | None:
        """The statistics under ``root`` (Sqrt, or Pow by +-0.5) of a normalization, else None."""
        if root.op == "Pow" and self.scalar(root.inputs[1]) not in (0.5, -0.5):
            return None
        r = self.unguard(root.inputs[0])
        add, eps = self.prod.get(r), 0.0
        if add is not None and add.op == "Add":
            consts = [self.scalar(i) for i in add.inputs]
            k = next((k for k, c in enumerate(consts) if c is not None and c >= 0.0), None)
            if k is not None:
                r, eps = add.inputs[1 - k], consts[k]
        found = self.variance(r)
        if found is None:
            return None
        x, axes, center, centered = found
        if self.g.tensors[x].dtype != np.float32 or not self.aligned(root.outputs[0], x, axes):
            return None
        return Stat(x, axes, eps, center, centered)

    # --- where the normalized value is made ------------------------------------------------------
    def outputs(self, root: Node, stat: Stat) -> list[tuple[Node, str | None]]:
        """[(node whose output is the normalized x [times gamma], gamma constant or None)]."""
        s = root.outputs[0]
        ends: list[tuple[Node, str, str | None]] = []      # (node, numerator, gamma)
        inverses = [s] if root.op == "Pow" and self.scalar(root.inputs[1]) == -0.5 else []
        for c in self.cons.get(s, []) if not inverses else []:
            if c.op == "Reciprocal":
                inverses.append(c.outputs[0])
            elif c.op == "Div" and c.inputs[1] == s:
                if self.scalar(c.inputs[0]) == 1.0:
                    inverses.append(c.outputs[0])
                else:
                    ends.append((c, c.inputs[0], None))
        for inv in inverses:
            for c in self.cons.get(inv, []):
                if c.op != "Mul":
                    continue
                other = c.inputs[1] if c.inputs[0] == inv else c.inputs[0]
                if self.g.const(other) is None:
                    ends.append((c, other, None))
                    continue
                ends += [(c2, c2.inputs[1] if c2.inputs[0] == c.outputs[0] else c2.inputs[0], other)
                         for c2 in self.cons.get(c.outputs[0], []) if c2.op == "Mul"]
        found = []
        for n, num, gamma in ends:
            if gamma is None and not self._fits(n, num, gamma, stat):
                num, gamma = self._gamma_on(num)       # w * (x - u) / sqrt(...): PyTorch's own LN
            if self._fits(n, num, gamma, stat):
                found.append((n, gamma))
        return found

    def _gamma_on(self, t: str) -> tuple[str, str | None]:
        """(y, gamma) when ``t = y * gamma`` with a constant gamma, else (t, None)."""
        n = self.prod.get(t)
        if n is not None and n.op == "Mul":
            for a, b in (n.inputs, n.inputs[::-1]):
                if self.g.const(b) is not None and self.g.const(a) is None:
                    return a, b
        return t, None

    def _fits(self, n: Node, numerator: str, gamma: str | None, stat: Stat) -> bool:
        xs = tuple(self.shape(stat.x))
        if tuple(self.shape(n.outputs[0]) or ()) != xs:
            return False
        if gamma is not None and not _broadcasts_to(self.g.const(gamma).shape, xs):
            return False
        if not stat.center:
            return numerator == stat.x
        if numerator == stat.centered:
            return True
        d = self.prod.get(numerator)
        return d is not None and d.op == "Sub" and d.inputs[0] == stat.x \
            and self.is_mean_of(d.inputs[1], stat.x, stat.axes)

    # --- x / max(||x||, eps) ----------------------------------------------------------------------
    def l2_division(self, div: Node) -> Stat | None:
        """The statistics of ``div`` when it is ``x / Clip(ReduceL2(x), min=eps)`` (or ``Max``)."""
        if div.op != "Div":
            return None
        x, den = div.inputs
        guard = self.prod.get(self.peel(den))
        eps = None
        if guard is not None and guard.op == "Clip" and guard.attrs.get("max", np.inf) == np.inf:
            eps, norm = guard.attrs.get("min", -np.inf), guard.inputs[0]
        elif guard is not None and guard.op == "Max" and len(guard.inputs) == 2:
            consts = [self.scalar(i) for i in guard.inputs]
            k = next((k for k, c in enumerate(consts) if c is not None), None)
            eps, norm = (consts[k], guard.inputs[1 - k]) if k is not None else (None, None)
        if eps is None or not eps >= 0.0:
            return None
        red = self.prod.get(self.peel(norm))
        found = self.axes_of(red) if red is not None and red.op == "ReduceL2" else None
        if found is None or found[0] != x or not self.aligned(den, x, found[1]) \
                or self.shape(div.outputs[0]) != self.shape(x) or self.g.tensors[x].dtype != np.float32:
            return None
        return Stat(x, found[1], float(eps), False, l2=True)
