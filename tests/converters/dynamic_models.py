"""Dynamically quantized ONNX models for tests/converters/frontend/test_qdynamic.py, made at test time.

* float sources (onnx.helper, seeded weights) that ONNX Runtime's own ``quantize_dynamic`` turns
  into its current forms (``tests/converters/prequant_models.py`` has the CNN and the MLP): recurrent
  models (LSTM -> DynamicQuantizeLSTM; a GRU, which ONNX Runtime leaves float, before a MatMul)
  and attention scores (a MatMulInteger of two activations);
* ``old_form``: the forms older quantizers wrote, by hand: the 2020 quantizer's run-time bias
  (``Cast(int32, Floor(b / (x_scale * w_scale))) -> Reshape -> Add`` on the int32 accumulator, as in
  ddddocr's common_old.onnx, uint8 weights with a zero point), and its activation quantizers
  (DynamicQuantizeLinear, a QuantizeLinear whose scale a ReduceMin/ReduceMax chain computes, or one
  with constant parameters);
* ``fused_matmuls``: DynamicQuantizeMatMul and MatMulIntegerToFloat, which ONNX Runtime's
  optimizer writes.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "x"
SEQ, FEATURES, HIDDEN = 6, 8, 12
RNN_SHAPE = (SEQ, 1, FEATURES)
OLD_SHAPE = (1, 3, 10, 10)
FUSED_SHAPE = (1, 16)
SCORES_SHAPE = (1, 8, 16)


def _model(nodes, inits, in_shape, out_shape, opset: int = 13, ms: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _c(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def samples(shape, count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{INPUT: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


# --- float recurrent sources ---------------------------------------------------------------------
def float_rnn(op: str = "LSTM", direction: str = "forward", seed: int = 0) -> onnx.ModelProto:
    """x [seq, 1, features] -> LSTM/GRU (initial state given) -> [seq, hidden * directions] -> MatMul."""
    rng = np.random.default_rng(seed)
    d, gates = (2 if direction == "bidirectional" else 1), (4 if op == "LSTM" else 3)
    w = lambda *shape: rng.normal(0, 0.4, shape).astype(np.float32)  # noqa: E731
    inits = [_c("W", w(d, gates * HIDDEN, FEATURES)), _c("R", w(d, gates * HIDDEN, HIDDEN)),
             _c("B", w(d, 2 * gates * HIDDEN) * 0.5), _c("h0", w(d, 1, HIDDEN) * 0.5),
             _c("head", w(d * HIDDEN, 5)), _c("shape", [SEQ, d * HIDDEN], np.int64)]
    states = ["h0"] + (["c0"] if op == "LSTM" else [])
    if op == "LSTM":
        inits.append(_c("c0", w(d, 1, HIDDEN) * 0.5))
    nodes = [helper.make_node(op, [INPUT, "W", "R", "B", "", *states], ["seq"], hidden_size=HIDDEN,
                              direction=direction, name="rnn"),
             helper.make_node("Transpose", ["seq"], ["t"], perm=[0, 2, 1, 3], name="t"),
             helper.make_node("Reshape", ["t", "shape"], ["flat"], name="flat"),
             helper.make_node("MatMul", ["flat", "head"], ["y"], name="head")]
    return _model(nodes, inits, RNN_SHAPE, [SEQ, 5])


def float_scores(seed: int = 0) -> onnx.ModelProto:
    """Attention scores, q k^T of two projections of x [1, 8, 16]: a MatMul of two activations,
    which quantize_dynamic quantizes on both sides unless MatMulConstBOnly (older versions did)."""
    rng = np.random.default_rng(seed)
    inits = [_c("wq", rng.normal(0, 0.3, (FEATURES * 2, 8))), _c("wk", rng.normal(0, 0.3, (FEATURES * 2, 8)))]
    nodes = [helper.make_node("MatMul", [INPUT, "wq"], ["q"], name="q"),
             helper.make_node("MatMul", [INPUT, "wk"], ["k"], name="k"),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
             helper.make_node("MatMul", ["q", "kt"], ["y"], name="scores")]
    return _model(nodes, inits, SCORES_SHAPE, [1, 8, 8])


def float_lookup(moved: bool, seed: int = 0) -> onnx.ModelProto:
    """ids [1, 6] -> Gather(table) [-> Transpose] -> MatMul: quantize_dynamic feeds the integer
    lookup straight to a MatMulInteger (the table's scale joins the rescale product)."""
    rng = np.random.default_rng(seed)
    inits = [_c("table", rng.normal(0, 1, (50, FEATURES))), _c("w", rng.normal(0, 0.3, (FEATURES, 5)))]
    move = [helper.make_node("Transpose", ["e0"], ["e"], perm=[1, 0, 2], name="move")] if moved else []
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e0" if moved else "e"], name="lookup"), *move,
             helper.make_node("MatMul", ["e", "w"], ["y"], name="mm")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 5] if moved else [1, 6, 5])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def id_samples(count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(0, 50, size=(1, 6)).astype(np.int64)} for _ in range(count)]


# --- the older forms, by hand --------------------------------------------------------------------
def _weights_uint8(w: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """Asymmetric uint8 weights over [min(w, 0), max(w, 0)], as quantize_dynamic's uint8 weights."""
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    zp = np.uint8(round(-lo / scale))
    return np.clip(np.round(w / scale) + zp, 0, 255).astype(np.uint8), scale, zp


def _weights_int8(w: np.ndarray) -> tuple[np.ndarray, np.float32, np.int8]:
    scale = np.float32(np.abs(w).max() / 127)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale, np.int8(0)


def _quantize_activation(x: str, form: str) -> tuple[list, list, tuple[str, str, str]]:
    """(nodes, initializers, (quantized, scale, zero point)) that quantize ``x`` at run time."""
    q, s, z = f"{x}_q", f"{x}_scale", f"{x}_zp"
    if form == "static":        # the 2020 quantizer's static=True: constant parameters (here +-6.4)
        return ([helper.make_node("QuantizeLinear", [x, s, z], [q], name=f"{x}_quantize")],
                [_c(s, 0.05), _c(z, 128, np.uint8)], (q, s, z))
    if form == "dql":
        return [helper.make_node("DynamicQuantizeLinear", [x], [q, s, z], name=f"{x}_dql")], [], (q, s, z)
    nodes = [helper.make_node("ReduceMin", [x], [f"{x}_min"], keepdims=0, name=f"{x}_min"),
             helper.make_node("ReduceMax", [x], [f"{x}_max"], keepdims=0, name=f"{x}_max")]
    if form == "uint8":         # scale = (max - min) / 255, zero point = Cast(Floor((0 - min) / scale))
        nodes += [helper.make_node("Sub", [f"{x}_max", f"{x}_min"], [f"{x}_span"], name=f"{x}_span"),
                  helper.make_node("Div", [f"{x}_span", "qrange_u8"], [s], name=f"{x}_s"),
                  helper.make_node("Sub", ["zero_f", f"{x}_min"], [f"{x}_neg"], name=f"{x}_neg"),
                  helper.make_node("Div", [f"{x}_neg", s], [f"{x}_zd"], name=f"{x}_zd"),
                  helper.make_node("Floor", [f"{x}_zd"], [f"{x}_zf"], name=f"{x}_zf"),
                  helper.make_node("Cast", [f"{x}_zf"], [z], to=TensorProto.UINT8, name=f"{x}_zc")]
        inits = [_c("qrange_u8", 255.0), _c("zero_f", 0.0)]
    else:                       # int8: scale = max(|min|, |max|) / 127, zero point 0
        nodes += [helper.make_node("Abs", [f"{x}_min"], [f"{x}_amin"], name=f"{x}_amin"),
                  helper.make_node("Abs", [f"{x}_max"], [f"{x}_amax"], name=f"{x}_amax"),
                  helper.make_node("Max", [f"{x}_amin", f"{x}_amax"], [f"{x}_absmax"], name=f"{x}_absmax"),
                  helper.make_node("Div", [f"{x}_absmax", "qrange_i8"], [s], name=f"{x}_s")]
        inits, z = [_c("qrange_i8", 127.0), _c("zero_i8", 0, np.int8)], "zero_i8"
    nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q], name=f"{x}_quantize"))
    return nodes, inits, (q, s, z)


def _conv_integer(x: str, out: str, w: np.ndarray, b: np.ndarray, form: str, bias: str,
                  weights: str) -> tuple[list, list]:
    """Conv(x, w, b) as quantize_dynamic writes it: ConvInteger, bias either on the int32
    accumulator at run time (``bias="int32"``, the 2020 form) or added in float after the rescale."""
    nodes, inits, (q, s, z) = _quantize_activation(x, form)
    wq, ws, wz = (_weights_uint8 if weights == "uint8" else _weights_int8)(w)
    inits += [_c(f"{out}_wq", wq, wq.dtype), _c(f"{out}_ws", ws), _c(f"{out}_wz", wz, wz.dtype), _c(f"{out}_b", b),
              _c(f"{out}_shape", [1, -1, 1, 1], np.int64)]
    acc = f"{out}_acc"
    nodes.append(helper.make_node("ConvInteger", [q, f"{out}_wq", z, f"{out}_wz"], [acc], pads=[1, 1, 1, 1],
                                  kernel_shape=list(w.shape[2:]), name=f"{out}_quant"))
    if bias == "int32":
        nodes += [helper.make_node("Mul", [s, f"{out}_ws"], [f"{out}_bs"], name=f"{out}_bias_scale"),
                  helper.make_node("Div", [f"{out}_b", f"{out}_bs"], [f"{out}_bd"], name=f"{out}_bias_div"),
                  helper.make_node("Floor", [f"{out}_bd"], [f"{out}_bf"], name=f"{out}_bias_floor"),
                  helper.make_node("Cast", [f"{out}_bf"], [f"{out}_bi"], to=TensorProto.INT32, name=f"{out}_bias_cast"),
                  helper.make_node("Reshape", [f"{out}_bi", f"{out}_shape"], [f"{out}_br"], name=f"{out}_bias_r"),
                  helper.make_node("Add", [acc, f"{out}_br"], [f"{out}_acc_b"], name=f"{out}_bias_add")]
        acc = f"{out}_acc_b"
    scaled = out if bias == "int32" else f"{out}_scaled"
    nodes += [helper.make_node("Cast", [acc], [f"{out}_f"], to=TensorProto.FLOAT, name=f"{out}_cast"),
              helper.make_node("Mul", [s, f"{out}_ws"], [f"{out}_s"], name=f"{out}_scales_mul"),
              helper.make_node("Mul", [f"{out}_f", f"{out}_s"], [scaled], name=f"{out}_rescale")]
    if bias != "int32":
        nodes += [helper.make_node("Reshape", [f"{out}_b", f"{out}_shape"], [f"{out}_br"]),     # unnamed, as ORT
                  helper.make_node("Add", [scaled, f"{out}_br"], [out], name=f"{out}_bias_add")]
    return nodes, inits


def old_form(form: str = "dql", bias: str = "int32", weights: str = "uint8", seed: int = 0) -> onnx.ModelProto:
    """Conv (int8 path) -> SiLU -> Conv -> Flatten -> MatMulInteger (+ float bias): the CRNN front of
    common_old.onnx in miniature, with the activation quantizer ``form`` ("dql", "uint8", "int8",
    "static")."""
    rng = np.random.default_rng(seed)
    c1, c2 = rng.normal(0, 0.3, (6, 3, 3, 3)), rng.normal(0, 0.2, (4, 6, 3, 3))
    n1, i1 = _conv_integer(INPUT, "c1", c1.astype(np.float32), rng.normal(0, 0.3, 6), form, bias, weights)
    n2, i2 = _conv_integer("silu", "c2", c2.astype(np.float32), rng.normal(0, 0.3, 4), form, bias, weights)
    n3, i3, (q, s, z) = _quantize_activation("flat", form)
    hq, hs, hz = _weights_int8(rng.normal(0, 0.05, (4 * 100, 5)).astype(np.float32))
    nodes = [*n1, helper.make_node("Sigmoid", ["c1"], ["sig"], name="sig"),
             helper.make_node("Mul", ["c1", "sig"], ["silu"], name="silu"), *n2,
             helper.make_node("Flatten", ["c2"], ["flat"], name="flat"), *n3,
             helper.make_node("MatMulInteger", [q, "hq", z, "hz"], ["mm"], name="head_quant"),
             helper.make_node("Cast", ["mm"], ["mm_f"], to=TensorProto.FLOAT, name="head_cast"),
             helper.make_node("Mul", [s, "hs"], ["head_s"], name="head_scales_mul"),
             helper.make_node("Mul", ["mm_f", "head_s"], ["head"], name="head_rescale"),
             helper.make_node("Add", ["head", "hb"], ["y"], name="head_bias")]
    inits = [*{i.name: i for i in [*i1, *i2, *i3]}.values(), _c("hq", hq, np.int8), _c("hs", hs), _c("hz", hz, np.int8),
             _c("hb", rng.normal(0, 0.1, 5))]
    return _model(nodes, inits, OLD_SHAPE, [1, 5], opset=11)


def fused_matmuls(seed: int = 0, rows: int = 0) -> onnx.ModelProto:
    """x -> DynamicQuantizeMatMul (per-column int8 B, bias) -> Relu -> DynamicQuantizeLinear ->
    MatMulIntegerToFloat (uint8 B with a zero point, bias) -> y; x is [1, 16], or [1, rows, 16]."""
    rng = np.random.default_rng(seed)
    b1 = rng.normal(0, 0.3, (16, 12))
    s1 = (np.abs(b1).max(axis=0) / 127).astype(np.float32)
    q1 = np.round(b1 / s1).astype(np.int8)
    q2, s2, z2 = _weights_uint8(rng.normal(0, 0.3, (12, 6)).astype(np.float32))
    nodes = [helper.make_node("DynamicQuantizeMatMul", [INPUT, "q1", "s1", "z1", "bias1"], ["h"],
                              domain="com.microsoft", name="dqmm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("DynamicQuantizeLinear", ["r"], ["rq", "rs", "rz"], name="r_dql"),
             helper.make_node("MatMulIntegerToFloat", ["rq", "q2", "rs", "s2", "rz", "z2", "bias2"], ["y"],
                              domain="com.microsoft", name="mmitf")]
    inits = [_c("q1", q1, np.int8), _c("s1", s1), _c("z1", np.zeros(12), np.int8), _c("bias1", rng.normal(0, 0.1, 12)),
             _c("q2", q2, np.uint8), _c("s2", s2), _c("z2", z2, np.uint8), _c("bias2", rng.normal(0, 0.1, 6))]
    shape = (1, rows, FUSED_SHAPE[1]) if rows else FUSED_SHAPE
    return _model(nodes, inits, shape, [*shape[:-1], 6], ms=True)
