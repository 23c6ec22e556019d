"""The QDQ model's float graph is the converter's IR written back as ONNX (qdq/emit.py).

Two properties: (1) every normalized form the frontend gives an op (frontend/quirks.py: inputs
moved to attributes, resolved pads, Python slices) is written back as an ONNX graph that computes
what the source graph computes, in onnxruntime; (2) the QDQ model's nodes and weights are the IR's:
a BatchNormalization is folded once, by the pass the TFLite build runs, and the Conv weights the
QDQ model quantizes are bit-identical to the float weights of the TFLite build (its int8 ones too).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ai_edge_litert.schema_py_generated as schema
from converters import tflite
from converters.calibrate import collect_ranges
from converters.errors import ShapeError
from converters.qdq import PROFILES, build, emit

RNG = np.random.default_rng(3)
X = [1, 4, 6, 6]


def w(*shape, scale=0.3):
    return RNG.normal(0, scale, size=shape).astype(np.float32)


def i64(*values):
    return np.array(values, np.int64)


def n(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, **attrs)


GELU = [n("Div", ["x", "sqrt2"], ["d"]), n("Erf", ["d"], ["e"]), n("Add", ["e", "one"], ["a"]),
        n("Mul", ["x", "a"], ["m"]), n("Mul", ["m", "half"], ["y"])]
BN = {"g": RNG.uniform(0.5, 1.5, 8).astype(np.float32), "b": w(8), "mu": w(8), "var": RNG.uniform(0.5, 2, 8).astype(np.float32)}

# name -> (nodes, initializers, input shape, opset, ops the written graph must not have)
CASES = {
    "Clip_inputs": ([n("Clip", ["x", "lo", "hi"], ["y"])], {"lo": np.float32(-0.2), "hi": np.float32(0.4)}, X, 13, ()),
    "Clip_min_only": ([n("Clip", ["x", "lo"], ["y"])], {"lo": np.float32(0.0)}, X, 13, ()),
    "Clip_max_only": ([n("Clip", ["x", "", "hi"], ["y"])], {"hi": np.float32(0.3)}, X, 11, ()),
    "Squeeze": ([n("Squeeze", ["x", "ax"], ["y"])], {"ax": i64(0)}, X, 13, ()),
    "Unsqueeze_opset11": ([n("Unsqueeze", ["x"], ["y"], axes=[-1])], {}, X, 11, ()),
    "ReduceMean_opset13": ([n("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)], {}, X, 13, ()),
    "ReduceMean_opset18": ([n("ReduceMean", ["x", "ax"], ["y"], keepdims=0)], {"ax": i64(-1)}, X, 18, ()),
    "ReduceSum_opset11": ([n("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0)], {}, X, 11, ()),
    "Split_opset11": ([n("Split", ["x"], ["y", "z"], axis=1, split=[1, 3])], {}, X, 11, ()),
    "Split_opset18_even": ([n("Split", ["x"], ["y", "z"], axis=-1, num_outputs=2)], {}, X, 18, ()),
    "Pad_value": ([n("Pad", ["x", "p", "v"], ["y"])], {"p": i64(0, 0, 1, 2, 0, 0, 2, 1), "v": np.float32(0.5)}, X, 13, ()),
    "Pad_reflect": ([n("Pad", ["x", "p"], ["y"], mode="reflect")], {"p": i64(0, 0, 0, 1, 0, 0, 0, 2)}, X, 18, ()),
    "Slice_reverse": ([n("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                      {"s": i64(-1), "e": i64(-(2 ** 63)), "a": i64(3), "st": i64(-1)}, X, 13, ()),
    "Slice_step2": ([n("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                    {"s": i64(1, 0), "e": i64(6, 5), "a": i64(2, 3), "st": i64(2, 2)}, X, 13, ()),
    "Reshape_computed": ([n("Shape", ["x"], ["sh"]), n("Gather", ["sh", "zero"], ["b"], axis=0),
                          n("Unsqueeze", ["b", "ax0"], ["b1"]), n("Concat", ["b1", "m1"], ["shape"], axis=0),
                          n("Reshape", ["x", "shape"], ["y"])],
                         {"zero": i64(0).reshape(()), "ax0": i64(0), "m1": i64(-1)}, X, 13, ("Shape", "Gather", "Concat")),
    "Resize_scales": ([n("Resize", ["x", "", "sc"], ["y"], mode="nearest")], {"sc": np.array([1, 1, 2, 2], np.float32)},
                      X, 13, ()),
    "Resize_sizes": ([n("Resize", ["x", "", "", "sz"], ["y"], mode="linear")], {"sz": i64(1, 4, 9, 9)}, X, 13, ()),
    "ConvTranspose_output_shape": ([n("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], output_shape=[13, 13])],
                                   {"W": w(4, 3, 3, 3)}, X, 13, ()),
    "MaxPool_same_upper": ([n("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")],
                           {}, X, 13, ()),
    "Conv_BatchNorm": ([n("Conv", ["x", "W"], ["c"]), n("BatchNormalization", ["c", "g", "b", "mu", "var"], ["y"])],
                       {"W": w(8, 4, 3, 3), **BN}, X, 13, ("BatchNormalization",)),
    "BatchNorm_alone": ([n("BatchNormalization", ["x", "g", "b", "mu", "var"], ["y"])],
                        {k: v[:4] for k, v in BN.items()}, X, 13, ("BatchNormalization",)),
    "Identity_Dropout": ([n("Identity", ["x"], ["i"]), n("Dropout", ["i"], ["d"]), n("Relu", ["d"], ["y"])],
                         {}, X, 13, ("Identity", "Dropout")),
    "Gelu_erf_opset17": (GELU, {"sqrt2": np.float32(math.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)},
                         X, 17, ()),
    "Gelu_erf_opset20": (GELU, {"sqrt2": np.float32(math.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)},
                         X, 20, ("Erf",)),
    "Einsum": ([n("Einsum", ["x", "W"], ["y"], equation="bchw,wk->bchk")], {"W": w(6, 5)}, X, 13, ("Einsum",)),
    "Softmax_legacy_axis1": ([n("Softmax", ["x"], ["y"], axis=1)], {}, X, 11, ()),
}


def make_model(name: str) -> onnx.ModelProto:
    nodes, inits, shape, opset, _ = CASES[name]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in nodes[-1].output],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_graph_computes_what_the_source_computes(name):
    model = make_model(name)
    written, origin = emit.emit(emit.ir_graph(model), model)
    onnx.checker.check_model(written, full_check=True)
    ops = [node.op_type for node in written.graph.node]
    assert not set(ops) & set(CASES[name][4]), ops
    assert written.opset_import[0].version == max(CASES[name][3], emit.MIN_OPSET)
    assert set(origin) == {node.name for node in written.graph.node}
    x = RNG.normal(size=CASES[name][2]).astype(np.float32)
    for want, got in zip(run(model, x), run(written, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def conv_bn_model() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> Gemm: one BN to fold, one Gemm to compare."""
    inits = {"W": w(8, 4, 3, 3), "B": w(8), **BN, "Wfc": w(5, 8 * 36, scale=0.05)}
    nodes = [n("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             n("BatchNormalization", ["c", "g", "b", "mu", "var"], ["bn"], name="bn"),
             n("Relu", ["bn"], ["r"], name="relu"), n("Flatten", ["r"], ["f"], name="flat"),
             n("Gemm", ["f", "Wfc"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def tflite_conv_weights(flat: bytes) -> np.ndarray:
    """The CONV_2D's weights of a TFLite model, in ONNX's [O, I, kH, kW] order, as stored (float32
    or int8)."""
    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    sub = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    (op,) = [o for o in sub.operators if codes[o.opcodeIndex] == schema.BuiltinOperator.CONV_2D]
    t = sub.tensors[op.inputs[1]]
    dtype = np.int8 if t.type == schema.TensorType.INT8 else np.float32
    data = np.frombuffer(np.asarray(model.buffers[t.buffer].data, np.uint8).tobytes(), dtype)
    return data.reshape(t.shape).transpose(0, 3, 1, 2)      # OHWI -> OIHW


def qdq_conv_weights(qdq: onnx.ModelProto) -> np.ndarray:
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producer = {o: node for node in qdq.graph.node for o in node.output}
    (conv,) = [node for node in qdq.graph.node if node.op_type == "Conv"]
    dq = producer[conv.input[1]]
    assert dq.op_type == "DequantizeLinear"
    return inits[dq.input[0]]


def calibration(model):
    samples = [{"x": RNG.normal(size=X).astype(np.float32)} for _ in range(8)]
    return collect_ranges(model, samples, progress=False), samples


def test_batchnorm_is_folded_once_into_the_weights_the_tflite_build_has():
    model = conv_bn_model()
    written, _ = emit.emit(emit.ir_graph(model), model)
    assert [node.op_type for node in written.graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    inits = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    (conv,) = [node for node in written.graph.node if node.op_type == "Conv"]
    float_tflite = tflite.build(model, None, tflite.TFLiteOptions(quantize="none")).flatbuffer
    np.testing.assert_array_equal(inits[conv.input[1]], tflite_conv_weights(float_tflite))   # bit-identical


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_qdq_int8_weights_are_the_tflite_builds(profile):
    model = conv_bn_model()
    ranges, samples = calibration(model)
    result = tflite.build(model, ranges, tflite.TFLiteOptions(), samples=samples)
    qdq = build(model, ranges, profile=profile, samples=samples, tflite=result)
    assert "BatchNormalization" not in {node.op_type for node in qdq.graph.node}
    np.testing.assert_array_equal(qdq_conv_weights(qdq), tflite_conv_weights(result.flatbuffer))


@pytest.mark.parametrize("kept", ["bn", "relu", "conv"])
def test_keeping_a_fused_node_float_keeps_its_conv_float(kept):
    model = conv_bn_model()
    ranges, samples = calibration(model)
    qdq = build(model, ranges, keep_float=(kept,), profile="onnxruntime", samples=samples)
    producer = {o: node.op_type for node in qdq.graph.node for o in node.output}
    (conv,) = [node for node in qdq.graph.node if node.op_type == "Conv"]
    (gemm,) = [node for node in qdq.graph.node if node.op_type == "Gemm"]
    assert producer.get(conv.input[0]) is None and conv.input[1] in {i.name for i in qdq.graph.initializer}
    assert producer[gemm.input[1]] == "DequantizeLinear"        # the rest is still quantized


def if_on_data_model() -> onnx.ModelProto:
    """An If on data whose branches read outer names: a tensor behind an Identity (drop_identity
    must not rename it) and an initializer nothing else reads (remove_unused must keep it)."""
    then = helper.make_graph([n("Conv", ["xi", "Wb"], ["t"], name="branch_conv")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([n("Neg", ["xi"], ["e"], name="branch_neg")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [n("Identity", ["x"], ["xi"], name="ident"), n("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             n("Greater", ["s", "zero"], ["c"], name="gt"),
             n("If", ["c"], ["h"], name="if_data", then_branch=then, else_branch=other),
             n("Conv", ["h", "W"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(w(8, 4, 1, 1), "W"),
                               numpy_helper.from_array(w(4, 4, 1, 1), "Wb")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_control_flow_on_data_is_written_from_the_ir_with_the_names_its_branches_read(profile):
    model = if_on_data_model()
    ranges, samples = calibration(model)
    qdq = build(model, ranges, profile=profile, samples=samples)
    onnx.checker.check_model(qdq, full_check=True)
    ops = [node.op_type for node in qdq.graph.node]
    assert "If" in ops and "DequantizeLinear" in ops
    assert "Wb" in {i.name for i in qdq.graph.initializer}
    assert "xi" in {o for node in qdq.graph.node for o in node.output}
    for sign in (1.0, -1.0):                                   # both branches
        x = sign * np.abs(RNG.normal(size=X)).astype(np.float32)
        want, got = run(model, x)[0], run(qdq, x)[0]
        assert 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2)) > 20     # 23 dB and up here (two int8 roundings)


def test_a_model_the_frontend_refuses_is_refused_with_its_typed_error():
    model = conv_bn_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"     # a dynamic batch, never pinned
    ranges, samples = calibration(conv_bn_model())
    with pytest.raises(ShapeError, match="input 'x' has no static shape") as info:
        build(model, ranges, profile="onnxruntime", samples=samples)
    assert "--input-shape" in info.value.hint


@pytest.mark.parametrize("keep", [(), ("ein",)])
def test_keeping_an_einsum_float_keeps_the_nodes_it_was_decomposed_into(keep):
    nodes = [n("Einsum", ["x", "W"], ["y"], name="ein", equation="bchw,wk->bchk")]
    graph = helper.make_graph(nodes, "ein", [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 5])],
                              [numpy_helper.from_array(w(6, 5), "W")])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    ranges, samples = calibration(model)
    qdq = build(model, ranges, keep_float=keep, profile="onnxruntime", samples=samples)
    ops = [node.op_type for node in qdq.graph.node]
    assert "MatMul" in ops and "Einsum" not in ops
    assert ("DequantizeLinear" in ops) == (not keep)
