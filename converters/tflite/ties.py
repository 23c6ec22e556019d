"""Tied int8 parameters: which tensors must share one scale and zero point, and what they get.

The TFLite int8 spec (https://www.tensorflow.org/lite/performance/quantization_spec) makes data
movement and comparison kernels (``rules.SAME_PARAMS``: CONCATENATION, PAD, RESHAPE, MAX_POOL_2D,
...) require every data input and the output to carry *the same* parameters, and LiteRT compares
them as float32 bits (tflite/kernels/concatenation.cc ``t->params.scale != output->params.scale``;
XNNPACK refuses the node too): two scales one ULP apart make the model unloadable.

This module is the one place that decides tied parameters:

1. ``cut_fixed_conflicts``: an op with fixed output parameters (``rules.FIXED_OUTPUT``: a LOGISTIC's
   1/256) feeding a tie that joins other sources (a CONCATENATION of sigmoid scores with pixel
   boxes) would force 1/256 on boxes or clip them: that input gets a requantize (QUANTIZE int8 ->
   int8) into a free tensor instead. Nothing is ever widened silently.
2. ``tie_groups``: one union-find over every tie constraint of the int8 ops.
3. ``group_params``: parameters computed once per group -- the fixed ones, or from the union of the
   members' ranges *and* of the constants the tied ops read (they are stored with these
   parameters) -- as one float32 ``QParams`` object that every member shares, so equality is by
   construction. ``check.check_int8`` verifies it bit by bit before writing.

Degenerate ranges (an all-zero layer, outputs ~1e-14) are ``degenerate.py``'s business.
"""
from __future__ import annotations

from converters.errors import ConvertError
from converters.tflite.ranges import union
from converters.tflite.rules import FIXED_OUTPUT, SAME_PARAMS, data_inputs
from converters.tgraph import TGraph, TOp, TTensor

# Ties that join several independent sources: where a fixed-parameter source meets free ones.
JOINING = {"CONCATENATION", "MAXIMUM", "MINIMUM"}


class Groups:
    """Union-find over tensor indices (path compression, union by size)."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:                         # compress the path just walked
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size.get(ra, 1) < self.size.get(rb, 1):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] = self.size.get(ra, 1) + self.size.get(rb, 1)
        return ra


def tied(tg: TGraph, op: TOp, *, consts: bool = False) -> list[int]:
    """The tensors ``op`` (a ``SAME_PARAMS`` op) ties together: its data inputs (activations; with
    ``consts`` also constant data inputs such as a PADV2 value) and its outputs."""
    ins = [op.inputs[i] for i in data_inputs(op.opcode, op.inputs) if i < len(op.inputs)]
    ins = [i for i in ins if i >= 0 and (consts or not tg.tensors[i].is_const)]
    return ins + list(op.outputs)


def _fixed_sources(tg: TGraph, int8_ops: set[int]) -> dict[int, tuple]:
    return {o: FIXED_OUTPUT[op.opcode] for op in tg.ops
            if id(op) in int8_ops and op.opcode in FIXED_OUTPUT for o in op.outputs}


def cut_fixed_conflicts(tg: TGraph, int8_ops: set[int], domain: dict, ranges: dict) -> int:
    """Requantize the fixed-parameter inputs of joining ties whose sources disagree; returns how
    many QUANTIZE ops were inserted. Single-input ties (RESHAPE, PAD, ...) only carry a source's
    parameters downstream, so only ``JOINING`` ops can meet a conflict."""
    fixed = _fixed_sources(tg, int8_ops)
    groups = Groups()
    fixed_of: dict[int, tuple] = {}          # root -> fixed params of its group, if any
    for t, params in fixed.items():
        fixed_of[groups.find(t)] = params
    new_ops: list[TOp] = []
    cuts: dict[int, int] = {}
    for op in tg.ops:
        if id(op) in int8_ops and op.opcode in JOINING:
            _cut_inputs(tg, op, groups, fixed_of, domain, ranges, cuts, new_ops)
        if id(op) in int8_ops and op.opcode in SAME_PARAMS:
            members = tied(tg, op)
            merged = {fixed_of.pop(groups.find(m)) for m in members if groups.find(m) in fixed_of}
            root = members[0]
            for m in members[1:]:
                root = groups.union(root, m)
            if merged:   # after _cut_inputs, at most one distinct value is left
                fixed_of[groups.find(root)] = merged.pop()
        new_ops.append(op)
    tg.ops[:] = new_ops
    return len(cuts)


def _cut_inputs(tg, op, groups, fixed_of, domain, ranges, cuts, new_ops) -> None:
    pos = [p for p in data_inputs(op.opcode, op.inputs)
           if p < len(op.inputs) and op.inputs[p] >= 0 and not tg.tensors[op.inputs[p]].is_const]
    kinds = {fixed_of.get(groups.find(op.inputs[p])) for p in pos}
    if len(kinds) <= 1:
        return
    for p in pos:
        i = op.inputs[p]
        if fixed_of.get(groups.find(i)) is None:
            continue
        if i not in cuts:
            t = tg.tensors[i]
            copy = tg.add(TTensor(f"{t.name}/requant", t.shape, "float32", perm=t.perm))
            domain[copy] = "int8"
            ranges[copy] = ranges.get(i, (0.0, 1.0))
            new_ops.append(TOp("QUANTIZE", [i], [copy], None, op.node))
            cuts[i] = copy
        op.inputs[p] = cuts[i]


def tie_groups(tg: TGraph, int8_ops: set[int], domain: dict) -> Groups:
    """Every int8 tensor in one union-find, joined by every tie of the int8 ops."""
    groups = Groups()
    for index, d in domain.items():
        if d == "int8":
            groups.find(index)
    for op in tg.ops:
        if id(op) in int8_ops and op.opcode in SAME_PARAMS:
            members = tied(tg, op)
            for m in members[1:]:
                groups.union(members[0], m)
    return groups


def members_by_group(groups: Groups, domain: dict) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for index, d in domain.items():
        if d == "int8":
            out.setdefault(groups.find(index), []).append(index)
    return out


def fixed_params(tg: TGraph, int8_ops: set[int], groups: Groups) -> dict[int, tuple]:
    """Group root -> the fixed (scale, zero point) one of its members' producers demands."""
    fixed: dict[int, tuple] = {}
    for t, params in _fixed_sources(tg, int8_ops).items():
        root = groups.find(t)
        if fixed.get(root, params) != params:
            raise ConvertError(f"conflicting fixed int8 parameters around tensor '{tg.tensors[t].name}'",
                               code="convert.internal", where=tg.tensors[t].name,
                               hint="keep this node in float with --keep-float, and please report it")
        fixed[root] = params
    return fixed


def group_ranges(tg: TGraph, int8_ops: set[int], groups: Groups, members: dict[int, list[int]],
                 ranges: dict) -> dict[int, tuple]:
    """Group root -> union of its members' ranges and of the constants its ties read."""
    out: dict[int, tuple] = {}
    for root, idxs in members.items():
        rng = None
        for i in idxs:
            rng = union(rng, ranges.get(i))
        out[root] = rng
    for op in tg.ops:
        if id(op) not in int8_ops or op.opcode not in SAME_PARAMS:
            continue
        root = groups.find(op.outputs[0])
        for i in tied(tg, op, consts=True):
            data = tg.tensors[i].data
            if data is not None and data.dtype.kind == "f" and data.size:
                out[root] = union(out.get(root), (float(data.min()), float(data.max())))
    return out
