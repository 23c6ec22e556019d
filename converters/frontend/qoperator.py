"""QOperator quantized ops -> float ops, for ``frontend.quantized`` (dynamic forms: ``qdynamic``).

Each handler replaces one quantized node by the float node it computes, dequantizes its constant
operands (weights keep their int8 grid), and declares the (scale, zero point) its quantized inputs
and output carry. Operands are (tensor, scale, zero point) input positions, as the op specs list
them: ONNX QLinearConv / QLinearMatMul
(https://onnx.ai/onnx/operators/onnx__QLinearConv.html) and ONNX Runtime's contrib ops
(https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md: QLinearAdd, QLinearMul,
QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu,
QLinearSoftmax, QGemm).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

MS = "com.microsoft"
STD = ("", "ai.onnx")


@dataclass(frozen=True)
class QSpec:
    float_op: str
    operands: tuple[tuple[int, int, int], ...]     # (tensor, scale, zero point) input positions
    output: tuple[int, int] | None                 # (scale, zero point) of the output
    weight: int | None = None                      # operand index holding the weights
    bias: int | None = None                        # input position of the int32 bias
    drop: tuple[str, ...] = ()                     # attributes the float op does not have
    domains: tuple[str, ...] = STD


def _triplets(n_inputs: int) -> tuple[tuple[int, int, int], ...]:
    return tuple((i, i + 1, i + 2) for i in range(2, n_inputs, 3))


SPECS = {
    "QLinearConv": QSpec("Conv", ((0, 1, 2), (3, 4, 5)), (6, 7), weight=1, bias=8),
    "QLinearMatMul": QSpec("MatMul", ((0, 1, 2), (3, 4, 5)), (6, 7), weight=1),
    "QGemm": QSpec("Gemm", ((0, 1, 2), (3, 4, 5)), (7, 8), weight=1, bias=6, domains=(MS,)),
    "QLinearAdd": QSpec("Add", ((0, 1, 2), (3, 4, 5)), (6, 7), domains=(MS,)),
    "QLinearMul": QSpec("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7), domains=(MS,)),
    "QLinearGlobalAveragePool": QSpec("GlobalAveragePool", ((0, 1, 2),), (3, 4), drop=("channels_last",),
                                      domains=(MS,)),
    "QLinearAveragePool": QSpec("AveragePool", ((0, 1, 2),), (3, 4), drop=("channels_last",), domains=(MS,)),
    "QLinearSigmoid": QSpec("Sigmoid", ((0, 1, 2),), (3, 4), domains=(MS,)),
    "QLinearLeakyRelu": QSpec("LeakyRelu", ((0, 1, 2),), (3, 4), domains=(MS,)),
    "QLinearSoftmax": QSpec("Softmax", ((0, 1, 2),), (3, 4), drop=("opset",), domains=(MS,)),
    "QLinearConcat": QSpec("Concat", (), (0, 1), domains=(MS,)),     # operands: triplets from input 2
}


def _spec_handler(reader, node) -> None:
    spec = SPECS[node.op_type]
    if any(a.name == "channels_last" and a.i for a in node.attribute):
        reader.problems.append(f"{node.name} ({node.op_type}): channels_last=1 is not supported")
        return
    reader.forms.add("qoperator")
    operands = spec.operands or _triplets(len(node.input))
    inputs, scales = [], []
    for k, (t, s, z) in enumerate(operands):
        name, scale, zp = node.input[t], reader.param(node, s), reader.param(node, z, np.uint8(0))
        if scale is None:
            return
        scales.append(np.asarray(scale, np.float64).reshape(-1))
        if name in reader.consts:
            axis = _weight_axis(node, reader.consts[name]) if k == spec.weight else None
            inputs.append(_const_operand(reader, node, name, scale, zp, axis))
        else:
            inputs.append(name)
            reader.declare(name, scale, zp, str(np.asarray(zp).dtype), node.name)
    if spec.bias is not None and spec.bias < len(node.input) and node.input[spec.bias]:
        inputs.append(_bias(reader, node, node.input[spec.bias], scales[0] * scales[1]))
    out = node.output[0]
    if spec.output is not None and spec.output[0] < len(node.input) and node.input[spec.output[0]]:
        scale, zp = reader.param(node, spec.output[0]), reader.param(node, spec.output[1], np.uint8(0))
        if scale is not None:
            reader.declare(out, scale, zp, str(np.asarray(zp).dtype), node.name)
    elif node.op_type == "QGemm":
        out = node.output[0]        # no y_scale: QGemm writes float
    float_node = helper.make_node(spec.float_op, inputs, [out], name=node.name)
    float_node.attribute.extend(a for a in node.attribute if a.name not in spec.drop)
    reader.emit(float_node, int8=True)


def _weight_axis(node, w: np.ndarray) -> int:
    if node.op_type == "QGemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "QLinearMatMul":
        return w.ndim - 1
    return 0


def _const_operand(reader, node, name: str, scale, zp, axis) -> str:
    q = reader.consts[name]
    out = fresh(reader, f"{name}_dequantized")
    per_channel = np.asarray(scale).size > 1
    reader.new_consts[out] = reader.consts[out] = dequantize_const(q, scale, zp, axis if per_channel else None)
    if axis is not None:
        reader.record_grid(out, q, scale, zp, axis if per_channel else None)
    return out


def _bias(reader, node, name: str, scale: np.ndarray) -> str:
    if name not in reader.consts:
        reader.problems.append(f"{node.name} ({node.op_type}): bias '{name}' must be a constant")
        return name
    b = reader.consts[name]
    out = fresh(reader, f"{name}_dequantized")
    scale = scale if scale.size > 1 else scale.reshape(())
    if b.dtype == np.int32:
        reader.new_consts[out] = reader.consts[out] = dequantize_const(b, scale, None, 0 if scale.ndim else None)
        reader.bias_scales[out] = np.asarray(scale, np.float32).reshape(-1)
    else:                                              # a float bias (QGemm may carry one)
        reader.new_consts[out] = reader.consts[out] = b.astype(np.float32)
    return out


def fresh(reader, base: str) -> str:
    name, k = base, 1
    while name in reader.consts:
        name, k = f"{base}_{k}", k + 1
    return name


def along(v, axis: int | None, ndim: int) -> np.ndarray:
    v = np.asarray(v)
    if v.size <= 1 or axis is None:
        return v.reshape(()) if v.size == 1 else v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def dequantize_const(q: np.ndarray, scale, zp, axis: int | None) -> np.ndarray:
    """(q - zp) * scale in float64 rounded once to float32 (per channel along ``axis``)."""
    zp = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64)
    s = along(np.asarray(scale, np.float64), axis, q.ndim)
    return ((q.astype(np.int64) - along(zp, axis, q.ndim)) * s).astype(np.float32)


HANDLERS = {op: _spec_handler for op in SPECS}
DOMAINS = {op: spec.domains for op, spec in SPECS.items()}
