"""Where int8 meets float: QUANTIZE / DEQUANTIZE at graph I/O and around float islands.

Every float tensor has a *domain*: ``int8`` when an int8 op produces it, ``float32`` when a float op
(or a float32 graph input) does, ``uint8`` for uint8 graph inputs. A consumer that wants the
other domain reads a converted copy (one per tensor, shared by all such consumers). Graph
outputs keep their ONNX name and index, so ``tensor_map`` and the interpreter's output details
stay stable whatever ``io`` is.

A TRANSPOSE that reads a float graph input with few channels (an NCHW image's layout change) runs
before the input's QUANTIZE, on float bytes (``float_input_transposes``).
"""
from __future__ import annotations

from converters.tflite.params import activation_params
from converters.tflite.rules import data_inputs
from converters.tgraph import QParams, TGraph, TOp, TTensor


# XNNPACK's int8 transpose is slower than its float one when the channels it interleaves are few:
# QUANTIZE -> int8 TRANSPOSE of a [1,3,224,224] float input took 0.110 ms, float TRANSPOSE ->
# QUANTIZE 0.075 ms; float also won at 2 and 8 channels, lost at 16 and 32 (bench/edge_transpose_bench.py,
# x86, 2 threads; docs/converter-internals.md "Against the TensorFlow route"). At an output edge the
# int8 TRANSPOSE before DEQUANTIZE won or tied at every channel count measured (3 to 64), so it stays.
NARROW = 16


def float_input_transposes(tg: TGraph, int8_ops: set[int]) -> None:
    """Leave float a channels-last TRANSPOSE (axis 1 to the end) of a float32 graph input with
    fewer than ``NARROW`` channels: the QUANTIZE then follows it. Moving float bytes is exact, so
    the numbers are unchanged; only the kernel that moves them is. (Float I/O only: an int8 or
    uint8 input has no float side.)"""
    inputs = {i for i in tg.inputs if tg.tensors[i].dtype == "float32"}
    for op in tg.ops:
        if op.opcode != "TRANSPOSE" or id(op) not in int8_ops or op.inputs[0] not in inputs:
            continue
        src, perm = tg.tensors[op.inputs[0]], tg.tensors[op.inputs[1]].data
        rank = len(src.shape)
        if perm is not None and list(perm) == [0, *range(2, rank), 1] and src.shape[1] < NARROW:
            int8_ops.discard(id(op))


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
