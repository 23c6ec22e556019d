"""The small graph IR that the converter's passes work on.

A ``Graph`` is a topologically ordered list of ``Node`` objects and a table of ``Tensor`` objects by
name. Constants (initializers, folded values) are tensors whose ``data`` is a numpy array; every
other tensor has a static ``shape`` and a numpy ``dtype``. Attribute defaults have already been
filled in by the frontend, so a pass or a lowering never consults the ONNX spec for a default.

``Tensor.perm`` is the layout decision of the ``convert_layout`` pass: the value held by the
backend tensor is ``numpy.transpose(onnx_value, perm)``. ``None`` means "ONNX layout".
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None     # set for constants
    perm: tuple[int, ...] | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def rank(self) -> int:
        return len(self.shape)

    def backend_shape(self) -> tuple[int, ...]:
        """The shape as the backend stores it (after the layout permutation)."""
        if self.perm is None:
            return tuple(self.shape)
        return tuple(self.shape[p] for p in self.perm)


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]                  # "" marks an omitted optional input (ONNX convention)
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    domain: str = ""

    def input(self, i: int) -> str:
        """The i-th input name, or "" when absent."""
        return self.inputs[i] if i < len(self.inputs) else ""


@dataclass
class Graph:
    nodes: list[Node]
    tensors: dict[str, Tensor]
    inputs: list[str]
    outputs: list[str]
    opset: int
    name: str = "graph"
    io_layout: str = "onnx"            # "onnx" | "nhwc": set by the backend before the layout pass
    quantize: str = "none"             # the backend's quantization mode, for passes that care
    _counter: itertools.count = field(default_factory=itertools.count, repr=False)

    # -- queries ---------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None when it is computed at run time."""
        t = self.tensors.get(name) if name else None
        return None if t is None else t.data

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    result.setdefault(i, []).append(n)
        return result

    # -- edits -----------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A tensor/node name that does not exist yet, derived from ``hint``."""
        while True:
            name = f"{hint}__{next(self._counter)}"
            if name not in self.tensors:
                return name

    def add_const(self, hint: str, value: np.ndarray) -> str:
        """A new constant under a fresh name derived from ``hint``; returns the name."""
        name = self.fresh(hint)
        self.set_const(name, value)
        return name

    def set_const(self, name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.tensors[name] = Tensor(name, tuple(value.shape), value.dtype, data=value)

    def rename_uses(self, old: str, new: str) -> None:
        """Point every consumer (and graph output) of ``old`` at ``new``."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_unused(self) -> bool:
        """Drop nodes whose outputs nobody reads, then tensors nobody mentions."""
        changed = False
        while True:
            used = set(self.outputs) | {i for n in self.nodes for i in n.inputs}
            keep = [n for n in self.nodes if any(o in used for o in n.outputs if o)]
            if len(keep) == len(self.nodes):
                break
            self.nodes = keep
            changed = True
        mentioned = set(self.inputs) | set(self.outputs)
        mentioned |= {t for n in self.nodes for t in (*n.inputs, *n.outputs)}
        for name in [t for t in self.tensors if t not in mentioned]:
            del self.tensors[name]
        return changed
