"""Where int8 meets float: QUANTIZE / DEQUANTIZE at graph I/O and around float islands.

Every float tensor has a *domain*: ``int8`` when an int8 op produces it, ``float32`` when a float op
(or a float32 graph input) does, ``uint8`` for uint8 graph inputs. A consumer that wants the
other domain reads a converted copy (one per tensor, shared by all such consumers). Graph
outputs keep their ONNX name and index, so ``tensor_map`` and the interpreter's output details
stay stable whatever ``io`` is.
"""
from __future__ import annotations

from converters.tflite.params import activation_params
from converters.tflite.rules import data_inputs
from converters.tgraph import QParams, TGraph, TOp, TTensor


def initial_domains(tg: TGraph, int8_ops: set[int], io: str) -> dict[int, str]:
    domain: dict[int, str] = {}
    for i in tg.inputs:
        if tg.tensors[i].dtype == "float32":
            domain[i] = {"float32": "float32", "int8": "int8", "uint8": "uint8"}[io]
    for op in tg.ops:
        for out in op.outputs:
            if tg.tensors[out].dtype == "float32":
                domain[out] = "int8" if id(op) in int8_ops else "float32"
    return domain


def insert_conversions(tg: TGraph, int8_ops: set[int], domain: dict[int, str], ranges: dict) -> None:
    cache: dict[tuple[int, str], int] = {}
    new_ops: list[TOp] = []
    for op in tg.ops:
        is_int8 = id(op) in int8_ops
        positions = data_inputs(op.opcode, op.inputs) if is_int8 else range(len(op.inputs))
        for pos in positions:
            if pos >= len(op.inputs):
                continue
            i = op.inputs[pos]
            if i < 0 or i not in domain:
                continue
            want = "int8" if is_int8 else "float32"
            if domain[i] == want:
                continue
            key = (i, want)
            if key not in cache:
                t = tg.tensors[i]
                new = tg.add(TTensor(f"{t.name}/{want}", t.shape, "float32", perm=t.perm))
                domain[new] = want
                if i in ranges:
                    ranges[new] = ranges[i]
                opcode = "QUANTIZE" if want == "int8" else "DEQUANTIZE"
                new_ops.append(TOp(opcode, [i], [new], None, op.node))
                cache[key] = new
            op.inputs[pos] = cache[key]
        new_ops.append(op)
    tg.ops[:] = new_ops


def _uint8(q: QParams) -> QParams:
    return QParams(q.scale.copy(), q.zero_point + 128, q.axis)


def finish_io(tg: TGraph, io: str, ranges: dict) -> None:
    """Set graph-input dtypes and add the output conversions ``io`` asks for.

    A uint8 input takes the parameters of its int8 copy shifted by 128 (its tie group's, when
    the copy is tied), so the QUANTIZE uint8 -> int8 at the edge is exact."""
    copies = {op.inputs[0]: op.outputs[0] for op in tg.ops if op.opcode == "QUANTIZE"}
    for i in tg.inputs:
        t = tg.tensors[i]
        if io == "uint8" and t.dtype == "float32" and i in ranges:
            base = tg.tensors[copies[i]].quant if i in copies else None
            t.dtype, t.quant = "uint8", _uint8(base if base is not None else activation_params(*ranges[i]))
    for pos, o in enumerate(tg.outputs):
        t = tg.tensors[o]
        if t.dtype == "float32" and io == "float32" or t.is_const:
            continue
        if t.dtype == "int8" and io == "int8":
            continue
        copy = tg.add(TTensor(f"{t.name}/{t.dtype}", t.shape, t.dtype, quant=t.quant, perm=t.perm))
        for op in tg.ops:
            op.inputs = [copy if x == o else x for x in op.inputs]
            op.outputs = [copy if x == o else x for x in op.outputs]
        if io == "float32":
            t.dtype, t.quant, opcode = "float32", None, "DEQUANTIZE"
        else:
            base = t.quant if t.quant is not None else activation_params(*ranges[o])
            t.quant = base if io == "int8" else _uint8(base)
            t.dtype, opcode = io, "QUANTIZE"
        tg.ops.append(TOp(opcode, [copy], [o], None, "output"))
