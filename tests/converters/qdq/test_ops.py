"""Every op the QDQ writer quantizes, as a one- or two-node graph: onnxruntime accepts the QDQ model
for both profiles and it stays close to float. (The tensorrt profile quantizes only the inputs of
weighted ops, ops.TENSORRT_INPUTS: a graph without one stays float there.)

Threshold: 25 dB. A single int8 requantization of a well-spread tensor gives ~40 dB; a two-stage
graph (input and output Q/DQ, plus weights) lands at 30-40 dB, and any wiring error (wrong axis,
wrong scale, a DQ feeding the wrong input) falls far below.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.calibrate import collect_ranges
from converters.qdq import PROFILES, build
from converters.qdq.ops import TENSORRT_INPUTS

RNG = np.random.default_rng(0)
X = [1, 4, 6, 6]


def w(*shape, scale=0.3):
    return RNG.normal(0, scale, size=shape).astype(np.float32)


# name -> (nodes, initializers {name: array}, extra inputs {name: shape}, output shape)
CASES = {
    "Conv": ([helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])],
             {"W": w(8, 4, 3, 3), "B": w(8)}, {}, [1, 8, 6, 6]),
    "Conv_depthwise": ([helper.make_node("Conv", ["x", "W"], ["y"], group=4, strides=[2, 2])],
                       {"W": w(4, 1, 3, 3)}, {}, [1, 4, 2, 2]),
    "ConvTranspose": ([helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2])],
                      {"W": w(4, 6, 2, 2), "B": w(6)}, {}, [1, 6, 12, 12]),
    "Conv_Relu": ([helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                  {"W": w(8, 4, 1, 1)}, {}, [1, 8, 6, 6]),
    "Add": ([helper.make_node("Add", ["x", "x2"], ["y"])], {}, {"x2": X}, X),
    "Sub_const": ([helper.make_node("Sub", ["x", "c"], ["y"])], {"c": w(1, 4, 1, 1)}, {}, X),
    "Mul": ([helper.make_node("Mul", ["x", "x2"], ["y"])], {}, {"x2": X}, X),
    "Concat": ([helper.make_node("Concat", ["x", "x2"], ["y"], axis=1)], {}, {"x2": X}, [1, 8, 6, 6]),
    "MaxPool": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], {}, {}, [1, 4, 3, 3]),
    "AveragePool": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                    {}, {}, X),
    "GlobalAveragePool": ([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {}, {}, [1, 4, 1, 1]),
    "ReduceMean": ([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)],
                   {"axes": np.array([2, 3], np.int64)}, {}, [1, 4, 1, 1]),
    "Clip": ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
             {"lo": np.array(0.0, np.float32), "hi": np.array(1.5, np.float32)}, {}, X),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1)], {}, {}, X),
    "PRelu": ([helper.make_node("PRelu", ["x", "s"], ["y"])], {"s": np.full((4, 1, 1), 0.2, np.float32)}, {}, X),
    "Sigmoid": ([helper.make_node("Sigmoid", ["x"], ["y"])], {}, {}, X),
    "Tanh": ([helper.make_node("Tanh", ["x"], ["y"])], {}, {}, X),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["x"], ["y"])], {}, {}, X),
    "HardSwish": ([helper.make_node("HardSwish", ["x"], ["y"])], {}, {}, X),
    "Softmax": ([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {}, {}, X),
    "Reshape": ([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                {"shape": np.array([1, 4, 36], np.int64)}, {}, [1, 4, 36]),
    "Flatten": ([helper.make_node("Flatten", ["x"], ["y"])], {}, {}, [1, 144]),
    "Transpose": ([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], {}, {}, [1, 6, 6, 4]),
    "Squeeze": ([helper.make_node("Squeeze", ["x", "axes"], ["y"])], {"axes": np.array([0], np.int64)}, {}, [4, 6, 6]),
    "Unsqueeze": ([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], {"axes": np.array([0], np.int64)}, {},
                  [1, 1, 4, 6, 6]),
    "Resize": ([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
               {"scales": np.array([1, 1, 2, 2], np.float32)}, {}, [1, 4, 12, 12]),
    "Slice": ([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])],
              {"st": np.array([1], np.int64), "en": np.array([5], np.int64), "ax": np.array([2], np.int64)}, {},
              [1, 4, 4, 6]),
    "Split": ([helper.make_node("Split", ["x", "sp"], ["y", "y2"], axis=1)], {"sp": np.array([1, 3], np.int64)}, {},
              [1, 1, 6, 6]),
    "Pad": ([helper.make_node("Pad", ["x", "pads"], ["y"])],
            {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, {}, [1, 4, 8, 8]),
    "MatMul_activations": ([helper.make_node("MatMul", ["x", "x2"], ["y"])], {}, {"x2": [1, 4, 6, 5]}, [1, 4, 6, 5]),
    "Gemm_bias": ([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "B"], ["y"])],
                  {"W": w(144, 10, scale=0.1), "B": w(10)}, {}, [1, 10]),
}


def make_model(name: str) -> onnx.ModelProto:
    nodes, inits, extra, out_shape = CASES[name]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in extra.items()]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def feeds(model, seed):
    rng = np.random.default_rng(seed)
    return {vi.name: rng.normal(size=[d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in model.graph.input}


def run(model, feed):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(["y"], feed)[0]


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_quantizes_and_runs(name, profile):
    model = make_model(name)
    ranges = collect_ranges(model, [feeds(model, s) for s in range(8)], progress=False)
    qdq = build(model, ranges, profile=profile)
    ops = [n.op_type for n in qdq.graph.node]
    if profile == "tensorrt" and not {n.op_type for n in model.graph.node} & set(TENSORRT_INPUTS):
        # TensorRT's placement: only the inputs of weighted ops are quantized, the rest runs float
        assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    else:
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    feed = feeds(model, 99)
    ref, got = run(model, feed), run(qdq, feed)
    err = float(np.sum((ref - got) ** 2))
    sqnr = 10 * np.log10(float(np.sum(ref ** 2)) / max(err, 1e-30))
    assert sqnr >= 25.0, (name, profile, sqnr)


def test_a_one_sided_constant_operand_gets_an_activation_grid_not_a_symmetric_one():
    """A folded anchor grid (0.5 .. 39.5) read by a Sub: the onnxruntime profile stores it on a
    uint8 grid over its own range, so it rounds by at most half of 39.5/255 (a symmetric int8
    grid would round by up to half of 39.5/127)."""
    anchors = np.linspace(0.5, 39.5, 36, dtype=np.float32).reshape(1, 1, 6, 6)
    graph = helper.make_graph([helper.make_node("Sub", ["x", "anchors"], ["y"], name="sub")], "anchors",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, X)],
                              [numpy_helper.from_array(anchors, "anchors")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    samples = [{"x": RNG.uniform(0, 40, X).astype(np.float32)} for _ in range(8)]
    qdq = build(model, collect_ranges(model, samples, progress=False), profile="onnxruntime")
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producer = {o: node for node in qdq.graph.node for o in node.output}
    sub = next(node for node in qdq.graph.node if node.op_type == "Sub")
    dq = producer[sub.input[1]]
    q, scale, zero_point = (inits[name] for name in dq.input)
    assert q.dtype == np.uint8 and zero_point.dtype == np.uint8
    got = (q.astype(np.float32) - zero_point.astype(np.float32)) * scale
    assert np.abs(got - anchors).max() <= 0.5 * 39.5 / 255 * 1.01
