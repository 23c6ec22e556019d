"""The int8 checks LiteRT and XNNPACK make when a model is prepared, made before it is written.

A model that breaks one of these loads nowhere (or aborts the process), so the converter refuses
to write it (``Int8ParamsError``, every violation listed, op index, opcode, ONNX node, tensors):

* **tied parameters** (``rules.SAME_PARAMS``): every int8 data input has the output's scale, as
  float32 *bits*, and zero point (tflite/kernels/concatenation.cc, pad.cc, ...
  ``t->params.scale != output->params.scale``; XNNPACK refuses the node);
* **fixed parameters** (``rules.FIXED_OUTPUT``): LOGISTIC/SOFTMAX output 1/256, -128, ... exactly
  (tflite/kernels/activations.cc checks ``output->params.scale == 1. / 256``);
* **per-channel weights**: quantized along the output-channel axis with one scale per channel;
* **requantization multipliers**: input scale x weight scale / output scale < 256 per channel for
  CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV (XNNPACK's operator creation fails at
  >= 256 and the delegate then fails the whole model), bias scale = input x weight scale within
  1e-6 (tflite/kernels/kernel_util.cc ``GetQuantizedConvolutionMultipler``), and for int8 ADD/SUB
  2 x max input scale / (2^20 x output scale) < 1 (tflite/kernels/add.cc left shift 20; the
  multiplier must be below one).

``check_int8(tg)`` runs on the TGraph the writer serializes; ``check_flatbuffer(bytes)`` on any
.tflite (the same checks over the file's own tensors, e.g. for a hand-edited model).
"""
from __future__ import annotations

from dataclasses import dataclass

import ai_edge_litert.schema_py_generated as schema
import numpy as np

from converters.errors import ConvertError
from converters.tflite.rules import FIXED_OUTPUT, SAME_PARAMS, WEIGHTS, data_inputs
from converters.tgraph import TGraph

XNNPACK_MULTIPLIER_MAX = 256.0
BIAS_SCALE_RTOL = 1e-6
ADD_LEFT_SHIFT = 20
INT_TYPES = ("int8", "uint8")
_TYPE_NAMES = {getattr(schema.TensorType, n): n.lower() for n in dir(schema.TensorType) if not n.startswith("_")}
_OP_NAMES = {getattr(schema.BuiltinOperator, n): n for n in dir(schema.BuiltinOperator) if not n.startswith("_")}


class Int8ParamsError(ConvertError):
    """An int8 model that LiteRT would refuse at prepare time; ``problems`` lists each violation."""
    code = "convert.int8_params"

    def __init__(self, problems: list[str], *, where: str | None = None):
        self.problems = list(problems)
        text = "\n".join(f"    - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} int8 parameter violation(s) LiteRT would refuse:\n{text}",
                         where=where, hint="this is a converter bug: please report it with the model; "
                                           "--keep-float on the named node works around it")


@dataclass
class _Tensor:
    name: str
    dtype: str
    scale: np.ndarray | None          # float32
    zero_point: np.ndarray | None
    shape: tuple = ()
    axis: int = 0                     # quantized dimension of per-channel parameters


@dataclass
class _Op:
    opcode: str
    inputs: list[int]
    outputs: list[int]
    node: str = ""


def check_int8(tg: TGraph) -> None:
    tensors = [_Tensor(t.name, t.dtype, None if t.quant is None else np.asarray(t.quant.scale, np.float32),
                       None if t.quant is None else np.asarray(t.quant.zero_point, np.int64),
                       tuple(t.shape), 0 if t.quant is None else int(t.quant.axis)) for t in tg.tensors]
    _raise(problems([_Op(op.opcode, list(op.inputs), list(op.outputs), op.node) for op in tg.ops], tensors))


def check_flatbuffer(flat: bytes) -> None:
    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    codes = [_OP_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]
    found: list[str] = []
    for sub in model.subgraphs:
        tensors = []
        for t in sub.tensors:
            q = t.quantization
            has = q is not None and q.scale is not None and len(q.scale)
            tensors.append(_Tensor(t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                                   _TYPE_NAMES.get(t.type, "?"),
                                   np.asarray(q.scale, np.float32) if has else None,
                                   np.asarray(q.zeroPoint, np.int64) if has else None,
                                   tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                                   int(q.quantizedDimension) if has else 0))
        ops = [_Op(codes[o.opcodeIndex], list(o.inputs), list(o.outputs)) for o in sub.operators]
        found += problems(ops, tensors)
    _raise(found)


def _raise(found: list[str]) -> None:
    if found:
        raise Int8ParamsError(found)


def problems(ops: list[_Op], tensors: list[_Tensor]) -> list[str]:
    found: list[str] = []
    for k, op in enumerate(ops):
        where = f"op #{k} {op.opcode}" + (f" (node '{op.node}')" if op.node else "")
        for rule in (_tied, _fixed, _channels, _weighted, _add):
            found += [f"{where}: {p}" for p in rule(op, tensors)]
    return found


def _int(tensors, i) -> _Tensor | None:
    t = tensors[i] if 0 <= i < len(tensors) else None
    return t if t is not None and t.dtype in INT_TYPES and t.scale is not None and len(t.scale) else None


def _bits(x) -> str:
    return f"{float(x):.9g} (0x{np.float32(x).view(np.uint32):08x})"


def _tied(op: _Op, tensors) -> list[str]:
    out = _int(tensors, op.outputs[0]) if op.opcode in SAME_PARAMS and op.outputs else None
    if out is None:
        return []
    found = []
    ins = [op.inputs[p] for p in data_inputs(op.opcode, op.inputs) if p < len(op.inputs)]
    for i in ins + op.outputs[1:]:
        t = _int(tensors, i)
        if t is None:
            continue
        if t.scale[0].view(np.uint32) != out.scale[0].view(np.uint32) or t.zero_point[0] != out.zero_point[0]:
            found.append(f"tensor '{t.name}' has scale {_bits(t.scale[0])} zero point {t.zero_point[0]}, "
                         f"tensor '{out.name}' has {_bits(out.scale[0])} zero point {out.zero_point[0]} "
                         "(the kernel needs them identical)")
    return found


def _fixed(op: _Op, tensors) -> list[str]:
    out = _int(tensors, op.outputs[0]) if op.opcode in FIXED_OUTPUT and op.outputs else None
    if out is None or out.dtype != "int8":
        return []
    scale, zp = FIXED_OUTPUT[op.opcode]
    if out.scale[0].view(np.uint32) == np.float32(scale).view(np.uint32) and out.zero_point[0] == zp:
        return []
    return [f"output '{out.name}' has scale {_bits(out.scale[0])} zero point {out.zero_point[0]}, "
            f"the kernel requires {_bits(scale)} zero point {zp}"]


def _channels(op: _Op, tensors) -> list[str]:
    """Per-channel weights: quantized along the op's output-channel axis, one scale per channel
    (conv.cc/depthwise_conv.cc check ``scale->size == filter->dims->data[quantized_dimension]``)."""
    if op.opcode not in WEIGHTS or len(op.inputs) <= WEIGHTS[op.opcode][0]:
        return []
    w_i, axis, _ = WEIGHTS[op.opcode]
    w = _int(tensors, op.inputs[w_i])
    if w is None or len(w.scale) == 1 or not w.shape:
        return []
    if w.axis != axis or w.axis >= len(w.shape) or len(w.scale) != w.shape[w.axis]:
        return [f"weights '{w.name}' (shape {list(w.shape)}) have {len(w.scale)} scales along axis {w.axis}; "
                f"the kernel needs one per channel along axis {axis}"]
    return []


def _weighted(op: _Op, tensors) -> list[str]:
    if op.opcode not in WEIGHTS or not op.outputs:
        return []
    w_i, _, b_i = WEIGHTS[op.opcode]
    x, w, y = (_int(tensors, op.inputs[data_inputs(op.opcode, op.inputs)[0]]),
               _int(tensors, op.inputs[w_i]), _int(tensors, op.outputs[0]))
    if x is None or w is None or y is None:
        return []
    found = []
    product = x.scale[0] * w.scale.astype(np.float32)                       # float32, as XNNPACK
    worst = float((product / y.scale[0]).max())
    if not worst < XNNPACK_MULTIPLIER_MAX:
        found.append(f"requantization multiplier {worst:.4g} (input '{x.name}' x weights '{w.name}' / "
                     f"output '{y.name}') is >= {XNNPACK_MULTIPLIER_MAX:g}; XNNPACK refuses it")
    b = tensors[op.inputs[b_i]] if b_i < len(op.inputs) and op.inputs[b_i] >= 0 else None
    if b is not None and b.scale is not None and len(b.scale) not in (1, len(w.scale)):
        found.append(f"bias '{b.name}' has {len(b.scale)} scales, weights '{w.name}' {len(w.scale)}")
    elif b is not None and b.scale is not None and len(b.scale):
        want = float(x.scale[0]) * w.scale.astype(np.float64)
        got = np.broadcast_to(b.scale.astype(np.float64), want.shape)
        if np.any(np.abs(want - got) > BIAS_SCALE_RTOL * np.minimum(want, got)):
            found.append(f"bias '{b.name}' scale is not input scale x weight scale (within 1e-6)")
    return found


def _add(op: _Op, tensors) -> list[str]:
    if op.opcode not in ("ADD", "SUB") or len(op.inputs) < 2 or not op.outputs:
        return []
    a, b, y = _int(tensors, op.inputs[0]), _int(tensors, op.inputs[1]), _int(tensors, op.outputs[0])
    if a is None or b is None or y is None or y.dtype != "int8":
        return []
    ratio = 2.0 * max(float(a.scale[0]), float(b.scale[0])) / (2.0 ** ADD_LEFT_SHIFT * float(y.scale[0]))
    if ratio < 1.0:
        return []
    return [f"output '{y.name}' scale {float(y.scale[0]):.4g} is too small for inputs '{a.name}', '{b.name}' "
            f"(the int8 kernel's output multiplier {ratio:.4g} must be below 1)"]
