"""One compiler, two writers: the .tflite and the QDQ .onnx converted from one model and one
calibration set carry the same int8 parameters for the same tensors.

Read independently on both sides: the TFLite model through LiteRT's own tensor details (scales,
zero points, quantized dimension), the QDQ model through its QuantizeLinear / DequantizeLinear
initializers. The ONNX Runtime profile stores activations as uint8: the same grid, zero point
moved by 128. The model has what made the two diverge before (an all-zero weight channel: 1e-8
in QDQ, 1/127 in TFLite; a BatchNormalization folded by two different passes; a Concat and a
MaxPool whose TFLite tensors share one scale; a Sigmoid with TFLite's fixed 1/256 output).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.api import convert
from converters.config import ConvertConfig
from core import artifact
from core.litert import make_interpreter

RNG = np.random.default_rng(11)


def _init(name, *shape, scale=0.3):
    return numpy_helper.from_array(RNG.normal(0, scale, shape).astype(np.float32), name)


def small_cnn() -> onnx.ModelProto:
    w1 = RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w1[5] = 0.0                                         # an all-zero output channel
    inits = [numpy_helper.from_array(w1, "w1"), _init("b1", 8, scale=0.1),
             numpy_helper.from_array(RNG.uniform(0.5, 1.5, 8).astype(np.float32), "gamma"),
             _init("beta", 8, scale=0.1), _init("mean", 8, scale=0.1),
             numpy_helper.from_array(RNG.uniform(0.5, 2.0, 8).astype(np.float32), "var"),
             _init("w2", 8, 8, 1, 1), _init("w3", 8, 1, 3, 3), _init("wfc", 10, 16), _init("bfc", 10, scale=0.1)]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             n("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn1"], name="bn1"),
             n("Relu", ["bn1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             n("Add", ["r1", "c2"], ["a"], name="add"),
             n("Relu", ["a"], ["r2"], name="relu2"),
             n("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p", "w3"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
             n("Sigmoid", ["d"], ["s"], name="sig"),
             n("Concat", ["p", "s"], ["cat"], name="cat", axis=1),
             n("GlobalAveragePool", ["cat"], ["g"], name="gap"),
             n("Flatten", ["g"], ["f"], name="flat"),
             n("Gemm", ["f", "wfc", "bfc"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tflite_params(flat: bytes):
    """({tensor name: (scale, zero point)} of per-tensor int8 tensors, [weight scales of each
    layer, in op order])."""
    interp = make_interpreter(flat, use_xnnpack=False)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    acts = {}
    for d in details.values():
        q = d["quantization_parameters"]
        if d["dtype"] == np.int8 and len(q["scales"]) == 1:
            acts[d["name"]] = (float(q["scales"][0]), int(q["zero_points"][0]))
    weights = [details[op["inputs"][1]]["quantization_parameters"]["scales"] for op in interp._get_ops_details()
               if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return acts, weights


def qdq_params(model: onnx.ModelProto):
    """({activation: (scale, zero point)} from QuantizeLinear, [weight scales of each Conv/Gemm,
    in node order])."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    acts = {n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]]))
            for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_scale = {n.output[0]: inits[n.input[1]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    weights = [np.atleast_1d(dq_scale[n.input[1]]) for n in model.graph.node
               if n.op_type in ("Conv", "Gemm") and n.input[1] in dq_scale]
    return acts, weights


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{way: (tflite bytes, qdq model)}: one --target both artifact, and the two
    targets converted one at a time (the QDQ build then makes its own TFLite build)."""
    root = tmp_path_factory.mktemp("shared")
    model_path = root / "small.onnx"
    onnx.save(small_cnn(), str(model_path))
    np.savez(root / "calib.npz", x=RNG.normal(0.5, 1.0, (16, 1, 3, 16, 16)).astype(np.float32))

    def run(output, **kw):
        return convert(ConvertConfig(model=model_path, output=root / output, calib=root / "calib.npz",
                                     progress=False, **kw))
    both = run("both.gpk", target="both", qdq_profile="onnxruntime")
    art = artifact.read(root / "both.gpk")
    run("alone.tflite")
    alone = run("alone.onnx", qdq_profile="onnxruntime")
    assert both.keep_float == [] and alone.keep_float == []
    return {"both": (art.model_bytes("tflite"), onnx.load_from_string(art.model_bytes("onnx"))),
            "alone": ((root / "alone.tflite").read_bytes(), onnx.load(str(root / "alone.onnx")))}


@pytest.mark.parametrize("way", ["both", "alone"])
def test_weights_carry_the_same_per_channel_scales(converted, way):
    flat, qdq = converted[way]
    t_weights, q_weights = tflite_params(flat)[1], qdq_params(qdq)[1]
    assert len(t_weights) == len(q_weights) == 4            # conv1 (BN folded), conv2, dw, fc
    for t, q in zip(t_weights, q_weights):
        np.testing.assert_array_equal(np.asarray(t, np.float32), np.asarray(q, np.float32))
    assert np.isclose(q_weights[0][5], 1 / 127)             # the all-zero channel, as TFLite has it


@pytest.mark.parametrize("way", ["both", "alone"])
def test_activations_carry_the_same_scale_and_zero_point(converted, way):
    flat, qdq = converted[way]
    t_acts, q_acts = tflite_params(flat)[0], qdq_params(qdq)[0]
    inputs = {i.name for i in qdq.graph.input}
    common = set(q_acts) & set(t_acts)
    # every quantized activation but the float graph input has an int8 twin of the same name
    assert common == set(q_acts) - inputs and {"r1", "r2", "p", "s", "cat", "f"} <= common
    for name in sorted(common):
        scale, zero_point = q_acts[name]
        assert (scale, zero_point - 128) == t_acts[name], name     # uint8 zero point = int8 + 128
    assert q_acts["s"] == (1 / 256, 0)                              # LOGISTIC's fixed output grid
    assert q_acts["p"] == q_acts["r2"]                              # MAX_POOL_2D's tied input/output


def test_qdq_model_runs_in_onnxruntime_and_passes_the_checker(converted):
    qdq = converted["alone"][1]
    onnx.checker.check_model(qdq, full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = RNG.normal(0.5, 1.0, (1, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(small_cnn().SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": x})[0].shape == ref.run(None, {"x": x})[0].shape == (1, 10)


