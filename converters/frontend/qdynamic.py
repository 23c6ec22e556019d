"""Dynamically quantized ONNX (ONNX Runtime's ``quantize_dynamic``, every form it has written) -> float ops.

``quantize_dynamic`` stores weights as integers with constant scales and quantizes activations
at run time, in front of each integer op. The forms found in its sources across versions
(onnxruntime/python/tools/quantization: onnx_quantizer.py, operators/conv.py, matmul.py, lstm.py)
and in shipped models:

* activations: ``DynamicQuantizeLinear(x)`` (uint8), or ``QuantizeLinear(x, scale, zp)`` whose
  scale (and uint8 zero point) a chain computes from ``x`` at run time: ReduceMin/ReduceMax ->
  Sub -> Div (uint8; zero point Sub -> Div -> Floor -> Cast) or ReduceMin/ReduceMax -> Abs -> Max
  -> Div (int8, zero point 0); or with constant parameters (``quantize(static=True)`` of 2020);
* ``ConvInteger`` / ``MatMulInteger`` on them, rescaled ``Cast(float) -> Mul(x_scale * w_scale)``.
  A Conv bias is added after the rescale in float (``Add(Reshape(b, [1, -1, 1, 1]))``, current
  versions; folded into the Conv here) or, in the 2020 quantizer (producer ``onnx.quantize``
  0.1.0, e.g. ddddocr's common_old.onnx), quantized at run time and added to the int32
  accumulator: ``Cast(int32, Floor(b / (x_scale * w_scale))) -> Reshape -> Add`` before the Cast;
* ``com.microsoft.DynamicQuantizeLSTM``: an LSTM whose W/R are integers stored transposed,
  [directions, input or hidden, 4 * hidden], with scales per direction or per direction and gate row
  (https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md);
* ``com.microsoft.DynamicQuantizeMatMul`` and ``MatMulIntegerToFloat``: ONNX Runtime's graph
  optimizer fuses the MatMul chains into these (models saved after optimization carry them).

Each becomes the float op it computes on ``x``, with weights ``(q - zp) * scale``: these are the
model's float weights, and the whole model is then calibrated and quantized by the normal int8
path. ``qrescale.prepare`` finds the patterns first: the nodes that compute run-time scales,
requantize biases or rescale are dropped, and a node that reads a run-time scale for anything
else is refused, by name. The handlers here write the float ops. QAttention and
QEmbedLayerNormalization (``quantize_dynamic`` of the fused transformer ops of
``onnxruntime.transformers``) are refused with the reason (``REFUSED``); ONNX Runtime quantizes
no GRU or RNN (they stay float and convert as such).
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from converters.frontend.qoperator import dequantize_const, fresh
from converters.frontend.qrescale import INTEGER_OPS, STD, const_input, where

MS = "com.microsoft"
REFUSED = {
    "QAttention": "ONNX Runtime's quantized fused Attention (onnxruntime.transformers' optimizer output) has no "
                  "lowering here; quantize or convert the model before attention is fused",
    "QEmbedLayerNormalization": "ONNX Runtime's quantized fused EmbedLayerNormalization (onnxruntime.transformers' "
                                "optimizer output) has no lowering here; convert the model before it is fused",
}


# --- handlers ----------------------------------------------------------------------------------
def run_time_quantize(reader, node) -> None:
    """``y = DynamicQuantizeLinear(x)`` or a QuantizeLinear on a run-time scale: y is x."""
    reader.forms.add("dynamic")
    reader.union(node.input[0], node.output[0])


def _operand(reader, node, k: int, scale, zp_index: int, axis: int | None) -> str | None:
    """The float tensor an integer op's operand ``k`` stands for: x itself when quantized at run
    time, else its dequantized constant (per channel along ``axis`` when the scale is a vector);
    None when it is neither (listed as a problem)."""
    name = node.input[k]
    if name in reader.run_time or name in reader.gathered:
        return name
    if name not in reader.consts or scale is None:
        reader.problems.append(f"{where(node)}: input '{name}' is neither quantized at run time nor a constant "
                               "with a constant scale")
        return None
    q = reader.consts[name]
    zp = const_input(reader, node, zp_index)
    per_channel = np.asarray(scale).size > 1
    if per_channel and axis is None:
        reader.problems.append(f"{where(node)}: per-channel scales on input {k} run along an axis the op "
                               "does not keep")
        return None
    out = fresh(reader, f"{name}_dequantized")
    reader.new_consts[out] = reader.consts[out] = dequantize_const(q, scale, zp, axis if per_channel else None)
    reader.record_grid(out, q, scale, zp, axis if per_channel else None)
    return out


def _last_axis(reader, name: str) -> int | None:
    """The output-column axis of a MatMul's constant B (its per-column scales run along it)."""
    return reader.consts[name].ndim - 1 if name in reader.consts else None


def integer(reader, node) -> None:
    """ConvInteger / MatMulInteger and their rescale -> Conv / MatMul (+ bias)."""
    r = reader.rescales.get(node.output[0])
    if r is None:
        return                                           # already listed as a problem
    is_conv = node.op_type == "ConvInteger"
    axis = 0 if is_conv else _last_axis(reader, node.input[1])
    inputs = [_operand(reader, node, 0, r.scale, 2, None), _operand(reader, node, 1, r.scale, 3, axis)]
    if None not in inputs:
        _emit_with_bias(reader, node, "Conv" if is_conv else "MatMul", inputs, r.bias, r.out,
                        node.attribute if is_conv else ())


def _emit_with_bias(reader, node, op: str, inputs: list[str], bias, out: str, attributes=()) -> None:
    """``op`` writing ``out``; a bias goes into a Conv, after a MatMul as an Add."""
    name, written, add = node.name or f"{out}_{op}", out, None
    if bias is not None:
        b = fresh(reader, f"{out}_bias")
        reader.new_consts[b] = reader.consts[b] = np.asarray(bias, np.float32)
        if op == "Conv":
            inputs = [*inputs, b]
        else:                            # a Gemm once shapes are known (quantized.restore_gemms)
            written = f"{out}_before_bias"
            add = helper.make_node("Add", [written, b], [out], name=f"{name}_bias")
            reader.split_gemms.append((name, add.name))
    float_node = helper.make_node(op, inputs, [written], name=name)
    float_node.attribute.extend(attributes)
    reader.forms.add("dynamic")
    reader.emit(float_node, int8=True)
    if add is not None:
        reader.emit(add, int8=True)


def dynamic_quantize_matmul(reader, node) -> None:
    """com.microsoft.DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias) -> MatMul (+ Add)."""
    b = _operand(reader, node, 1, const_input(reader, node, 2), 3, _last_axis(reader, node.input[1]))
    if b is not None:
        _emit_with_bias(reader, node, "MatMul", [node.input[0], b], const_input(reader, node, 4), node.output[0])


def matmul_integer_to_float(reader, node) -> None:
    """com.microsoft.MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp, bias) -> MatMul (+ Add);
    a run-time quantized operand is its float tensor (its scale input is the run-time one)."""
    inputs = [_operand(reader, node, 0, const_input(reader, node, 2), 4, None),
              _operand(reader, node, 1, const_input(reader, node, 3), 5, _last_axis(reader, node.input[1]))]
    if None not in inputs:
        _emit_with_bias(reader, node, "MatMul", inputs, const_input(reader, node, 6), node.output[0])


def dynamic_quantize_lstm(reader, node) -> None:
    """com.microsoft.DynamicQuantizeLSTM -> LSTM with W, R dequantized and back in ONNX's layout."""
    at = where(node)
    ins = list(node.input) + [""] * (12 - len(node.input))
    weights = []
    for k, scale_index in ((1, 8), (2, 10)):
        scale, zp = const_input(reader, node, scale_index), const_input(reader, node, scale_index + 1)
        if ins[k] not in reader.consts or scale is None:
            reader.problems.append(f"{at}: {'WR'[k - 1]} and its scale must be constant")
            return
        value = lstm_weights(reader.consts[ins[k]], scale, zp)
        if value is None:
            reader.problems.append(f"{at}: {'WR'[k - 1]} scales are neither per direction nor per gate row")
            return
        name = fresh(reader, f"{ins[k]}_dequantized")
        reader.new_consts[name] = reader.consts[name] = value
        weights.append(name)
    inputs = [ins[0], *weights, *ins[3:8]]
    while inputs and not inputs[-1]:
        inputs.pop()
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name or f"{node.output[0]}_LSTM")
    lstm.attribute.extend(node.attribute)
    reader.forms.add("dynamic")
    reader.emit(lstm, int8=True)


def lstm_weights(q: np.ndarray, scale, zp) -> np.ndarray | None:
    """[directions, rows, 4*hidden] integers with scales per direction ([D]) or per direction and
    gate row ([D, 4*hidden]) -> float [directions, 4*hidden, rows] (ONNX LSTM's W/R layout)."""
    if q.ndim != 3:
        return None
    d, _, gates = q.shape
    s = np.asarray(scale, np.float64)
    z = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64)
    shape = {d: (d, 1, 1), d * gates: (d, 1, gates)}
    if s.size not in shape or z.size not in (1, *shape):
        return None
    z = z.reshape(shape[z.size]) if z.size in shape else z.reshape(())
    value = (q.astype(np.int64) - z) * s.reshape(shape[s.size])
    return np.ascontiguousarray(value.astype(np.float32).transpose(0, 2, 1))


def refuse(reader, node) -> None:
    reader.problems.append(f"{node.name or node.output[0]} ({node.domain}.{node.op_type}): {REFUSED[node.op_type]}")


HANDLERS = {"DynamicQuantizeLinear": run_time_quantize, "ConvInteger": integer, "MatMulInteger": integer,
            "DynamicQuantizeLSTM": dynamic_quantize_lstm, "DynamicQuantizeMatMul": dynamic_quantize_matmul,
            "MatMulIntegerToFloat": matmul_integer_to_float, **{op: refuse for op in REFUSED}}
DOMAINS = {"DynamicQuantizeLinear": STD, "ConvInteger": STD, "MatMulInteger": STD,
           **{op: (MS,) for op in HANDLERS if op not in ("DynamicQuantizeLinear", *INTEGER_OPS)}}
