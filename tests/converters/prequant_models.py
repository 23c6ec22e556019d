"""Small already-quantized ONNX models for tests/converters/frontend/test_prequantized*.py, made at test time.

* ``float_cnn`` / ``float_mlp``: float graphs made with onnx.helper (seeded weights), the sources;
* ``ort_static`` / ``ort_dynamic``: ONNX Runtime's own quantizer (quantize_static in QDQ or
  QOperator format, quantize_dynamic) applied to them;
* ``qat_cnn``: a QAT-style QDQ export written the way PyTorch's exporter writes one: int8 weight
  initializers behind DequantizeLinear (per channel, learned scales whose largest |q| is below
  127), QuantizeLinear -> DequantizeLinear pairs on activations, and one fake-quantized float
  weight (QuantizeLinear -> DequantizeLinear on an initializer).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)

INPUT = "x"
CNN_SHAPE = (1, 3, 16, 16)
MLP_SHAPE = (1, 24)


def _init(rng, name: str, shape, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inits, in_shape, out_shape, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def float_cnn(seed: int = 0, concat: bool = True, bn: bool = False) -> onnx.ModelProto:
    """Conv+Relu, MaxPool, Conv+LeakyRelu, residual Add, SiLU gate (Sigmoid * x), [Concat],
    GlobalAveragePool, Flatten, Gemm: the ops ORT's QOperator format turns into QLinear*.
    ``bn``: a BatchNormalization between conv1 and its Relu (quantize_static leaves it separate)."""
    rng = np.random.default_rng(seed)
    width = 16 if concat else 8
    first = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    extra = []
    if bn:
        first = [helper.make_node("Conv", ["x", "w1", "b1"], ["c0"], pads=[1, 1, 1, 1], name="conv1"),
                 helper.make_node("BatchNormalization", ["c0", "g", "be", "mu", "var"], ["c1"], name="bn1")]
        extra = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32) * np.float32([1, -1] * 4), "g"),
                 _init(rng, "be", [8], 0.1), _init(rng, "mu", [8], 0.1),
                 numpy_helper.from_array(rng.uniform(0.5, 2.0, 8).astype(np.float32), "var")]
    nodes = [
        *first,
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("LeakyRelu", ["c2"], ["l2"], alpha=0.1, name="leaky2"),
        helper.make_node("Add", ["l2", "p1"], ["a2"], name="add2"),
        helper.make_node("Sigmoid", ["a2"], ["s2"], name="sig2"),
        helper.make_node("Mul", ["a2", "s2"], ["m2"], name="silu2"),
    ]
    last = "m2"
    if concat:
        nodes.append(helper.make_node("Concat", ["m2", "p1"], ["cat"], axis=1, name="cat"))
        last = "cat"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    inits = [_init(rng, "w1", [8, 3, 3, 3]), _init(rng, "b1", [8], 0.1), _init(rng, "w2", [8, 8, 3, 3], 0.2),
             _init(rng, "b2", [8], 0.1), _init(rng, "w3", [10, width]), _init(rng, "b3", [10], 0.1)]
    return _model(nodes, inits + extra, CNN_SHAPE, [1, 10])


def float_mlp(seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add -> Relu -> MatMul + Add (QLinearMatMul / QLinearAdd in QOperator form)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
             helper.make_node("MatMul", ["r", "w2"], ["o"], name="mm2"),
             helper.make_node("Add", ["o", "b2"], ["y"], name="bias2")]
    inits = [_init(rng, "w1", [24, 32]), _init(rng, "b1", [32], 0.1), _init(rng, "w2", [32, 6]),
             _init(rng, "b2", [6], 0.1)]
    return _model(nodes, inits, MLP_SHAPE, [1, 6])


def grouped_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu then a 2-group Conv (TFLite runs it as one CONV_2D per group)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], group=2, name="gconv")]
    inits = [_init(rng, "w1", [8, 3, 3, 3]), _init(rng, "b1", [8], 0.1), _init(rng, "w2", [6, 4, 3, 3]),
             _init(rng, "b2", [6], 0.1)]
    return _model(nodes, inits, (1, 3, 8, 8), [1, 6, 8, 8])


def samples(shape, count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{INPUT: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict]):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def ort_static(src: Path, dst: Path, feeds: list[dict], *, fmt: str = "QDQ", per_channel: bool = True,
               activations: str = "uint8", **kwargs) -> Path:
    """``quantize_static`` of the float model at ``src`` (int8 weights)."""
    act = QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8
    quantize_static(str(src), str(dst), _Reader(feeds), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8, **kwargs)
    return dst


def ort_dynamic(src: Path, dst: Path, **kwargs) -> Path:
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **kwargs)
    return dst


# --- a QAT-style export ----------------------------------------------------------------------
def _qat_weight(rng, name: str, shape, max_q: int = 100) -> tuple[list, list, np.ndarray]:
    """int8 weights whose per-channel largest |q| is ``max_q`` (a learned scale, not absmax/127)."""
    q = rng.integers(-max_q, max_q + 1, size=shape).astype(np.int8)
    q.reshape(shape[0], -1)[:, 0] = max_q
    scale = (rng.uniform(0.002, 0.01, size=shape[0])).astype(np.float32)
    inits = [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_scale"),
             numpy_helper.from_array(np.zeros(shape[0], np.int8), f"{name}_zp")]
    node = helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [name], axis=0,
                            name=f"{name}_dq")
    return [node], inits, scale


def _qdq(name: str, scale: float, zp: int, dtype=np.uint8) -> tuple[list, list]:
    """QuantizeLinear -> DequantizeLinear on activation ``name``; the DQ output is ``name``_dq."""
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
             numpy_helper.from_array(np.array(zp, dtype), f"{name}_z")]
    nodes = [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                              name=f"{name}_DQ")]
    return nodes, inits


def qat_cnn(seed: int = 3, float_tail: bool = False) -> onnx.ModelProto:
    """x -Q/DQ-> Conv, Relu -Q/DQ-> Conv, Relu -Q/DQ-> GlobalAveragePool -Q/DQ-> Flatten -> Gemm -Q/DQ->
    y, as torch.onnx.export writes a QAT (fake-quantized) network; the Gemm weight is a float
    initializer fake-quantized with QuantizeLinear -> DequantizeLinear. ``float_tail``: a Softmax
    after the last DequantizeLinear, left float as a mixed export leaves it."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for name, shape in (("w1", [8, 3, 3, 3]), ("w2", [8, 8, 3, 3])):
        n, i, _ = _qat_weight(rng, name, shape)
        nodes += n
        inits += i
    w3f = _init(rng, "w3f", [10, 8], 0.3)
    w3_scale = (np.abs(numpy_helper.to_array(w3f)).max(axis=1) / 100).astype(np.float32)   # |q| <= 100
    inits += [_init(rng, "b1", [8], 0.05), _init(rng, "b2", [8], 0.05), w3f, _init(rng, "b3", [10], 0.05),
              numpy_helper.from_array(w3_scale, "w3_s"),
              numpy_helper.from_array(np.zeros(10, np.int8), "w3_z")]
    nodes += [helper.make_node("QuantizeLinear", ["w3f", "w3_s", "w3_z"], ["w3_q"], axis=0, name="w3_Q"),
              helper.make_node("DequantizeLinear", ["w3_q", "w3_s", "w3_z"], ["w3"], axis=0, name="w3_DQ")]
    chain = [("x", 0.03, 128), ("r1", 0.02, 0), ("r2", 0.015, 0), ("gap", 0.01, 0)]
    acts = {}
    for name, scale, zp in chain:
        n, i = _qdq(name, scale, zp)
        acts[name] = (n, i)
    out_name = "logits"
    body = [
        *acts["x"][0],
        helper.make_node("Conv", ["x_dq", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"), *acts["r1"][0],
        helper.make_node("Conv", ["r1_dq", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"), *acts["r2"][0],
        helper.make_node("GlobalAveragePool", ["r2_dq"], ["gap"], name="gap"), *acts["gap"][0],
        helper.make_node("Flatten", ["gap_dq"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], [out_name], transB=1, name="fc"),
    ]
    n, i = _qdq(out_name, 0.05, 128)
    body += n
    tail = [helper.make_node("Softmax", [f"{out_name}_dq"], ["y"], axis=1, name="softmax")] if float_tail else \
        [helper.make_node("Identity", [f"{out_name}_dq"], ["y"], name="out")]
    for _, extra in acts.values():
        inits += extra
    return _model(nodes + body + tail, inits + i, CNN_SHAPE, [1, 10])


# --- single QOperator nodes -------------------------------------------------------------------
MS = "com.microsoft"
X_SCALE, X_ZP = 0.03, 128            # x ~ N(0, 1) in uint8, no clipping
Y_SCALE, Y_ZP = 0.05, 128


def _c(name: str, value, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _qop_operands(op: str, rng) -> tuple[list[str], dict, str, list, list]:
    """(inputs, attributes, domain, extra nodes, extra initializers) of ``op`` reading ``xq``."""
    x_in, y_out = ["xq", "xs", "xz"], ["ys", "yz"]
    if op == "QLinearConv":
        inits = [_c("w", rng.integers(-127, 128, (4, 4, 3, 3)), np.int8),
                 _c("ws", rng.uniform(0.002, 0.006, 4), np.float32), _c("wz", np.zeros(4), np.int8),
                 _c("b", rng.integers(-2000, 2000, 4), np.int32)]
        return x_in + ["w", "ws", "wz"] + y_out + ["b"], {"pads": [1, 1, 1, 1]}, "", [], inits
    if op == "QLinearMatMul":
        inits = [_c("w", rng.integers(-127, 128, (8, 5)), np.int8), _c("ws", 0.01, np.float32), _c("wz", 0, np.int8)]
        return x_in + ["w", "ws", "wz"] + y_out, {}, "", [], inits
    if op == "QGemm":
        inits = [_c("w", rng.integers(-127, 128, (5, 8)), np.int8),
                 _c("ws", rng.uniform(0.005, 0.015, 5), np.float32), _c("wz", np.zeros(5), np.int8),
                 _c("b", rng.integers(-500, 500, 5), np.int32)]
        return x_in + ["w", "ws", "wz", "b"] + y_out, {"transB": 1}, MS, [], inits
    if op in ("QLinearAdd", "QLinearMul"):
        inits = [_c("c", rng.integers(0, 256, (1, 4, 1, 1)), np.uint8), _c("cs", 0.01, np.float32),
                 _c("cz", 128, np.uint8)]
        return x_in + ["c", "cs", "cz"] + y_out, {}, MS, [], inits
    if op == "QLinearConcat":
        leaky = helper.make_node("QLinearLeakyRelu", x_in + ["ls", "lz"], ["lq"], alpha=0.1, domain=MS, name="leaky")
        inits = [_c("ls", 0.03, np.float32), _c("lz", 10, np.uint8)]
        return y_out + x_in + ["lq", "ls", "lz"], {"axis": 1}, MS, [leaky], inits
    attrs = {"QLinearSoftmax": {"axis": -1, "opset": 13}, "QLinearGlobalAveragePool": {"channels_last": 0},
             "QLinearAveragePool": {"kernel_shape": [2, 2], "strides": [2, 2], "channels_last": 0},
             "QLinearLeakyRelu": {"alpha": 0.1}, "QLinearSigmoid": {}}[op]
    return x_in + y_out, attrs, MS, [], []


def single_qop(op: str, seed: int = 0) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """x -> QuantizeLinear -> ``op`` (uint8 activations, int8 weights) -> DequantizeLinear -> y,
    as ONNX Runtime's QOperator format writes each op; returns (model, input shape)."""
    rng = np.random.default_rng(seed)
    image = op not in ("QLinearMatMul", "QGemm", "QLinearSoftmax")
    shape = (1, 4, 6, 6) if image else (1, 8)
    y_scale, y_zp = (1 / 256, 0) if op == "QLinearSoftmax" else (Y_SCALE, Y_ZP)
    inits = [_c("xs", X_SCALE, np.float32), _c("xz", X_ZP, np.uint8), _c("ys", y_scale, np.float32),
             _c("yz", y_zp, np.uint8)]
    inputs, attrs, domain, extra_nodes, extra = _qop_operands(op, rng)
    inits += extra
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"), *extra_nodes,
             helper.make_node(op, inputs, ["yq"], domain=domain, name="op", **attrs),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant")]
    out_shape = {"QLinearMatMul": [1, 5], "QGemm": [1, 5], "QLinearGlobalAveragePool": [1, 4, 1, 1],
                 "QLinearAveragePool": [1, 4, 3, 3], "QLinearConcat": [1, 8, 6, 6]}.get(op, list(shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model, shape
