"""QDQ ONNX: runs in the real onnxruntime, stays close to float, and has the layout TensorRT expects.

SQNR threshold: one int8 rounding of a full-scale signal gives ~6.02*8+1.76 = 50 dB; a CNN
stacks dozens of requantizations, and random-weight nets (no trained redundancy) lose more.
We ask for >= 20 dB (error power at most 1% of the signal) on the random-weight examples (they
reach 24-39 dB; a zero point with the wrong sign drops ResNet-tiny to 3.5 dB), and for the
trained digits CNN the measure that matters: top-1 accuracy within 1 point of float.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.calibrate import collect_ranges
from converters.qdq import PROFILES, build
from core.errors import UsageError
from tests.converters.ops.harness import sqnr_db

PROFILE_NAMES = sorted(PROFILES)


def session(model: onnx.ModelProto, optimized_path=None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def random_samples(model, count, seed):
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return [{vi.name: rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def cnns(resnet_tiny_path, mobilenet_v2_small_path):
    """(float model, ranges, held-out samples) for the two random-weight example CNNs."""
    out = {}
    for name, path in (("resnet_tiny", resnet_tiny_path), ("mobilenet_v2_small", mobilenet_v2_small_path)):
        model = onnx.load(str(path))
        ranges = collect_ranges(model, random_samples(model, 12, seed=1), progress=False)
        out[name] = (model, ranges, random_samples(model, 4, seed=2))
    return out


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_small"])
def test_runs_in_onnxruntime_close_to_float(cnns, name, profile):
    model, ranges, holdout = cnns[name]
    qdq = build(model, ranges, profile=profile)
    float_sess, q_sess = session(model), session(qdq)
    ref = np.concatenate([float_sess.run(None, s)[0] for s in holdout])
    got = np.concatenate([q_sess.run(None, s)[0] for s in holdout])
    assert got.shape == ref.shape and got.dtype == np.float32
    assert sqnr_db(ref, got) >= 20.0
    assert not np.array_equal(ref, got)            # it really is quantized


def test_trained_digits_accuracy_within_one_point(digits_dir):
    model = onnx.load(str(digits_dir / "digits_cnn.onnx"))
    calib = np.load(digits_dir / "calib.npz")["input"]
    holdout = np.load(digits_dir / "holdout.npz")["input"]
    labels = np.load(digits_dir / "holdout_labels.npy")
    ranges = collect_ranges(model, [{"input": x[None]} for x in calib[:100]], progress=False)
    f_pred = np.array([np.argmax(session_run(model, x)) for x in holdout])
    for profile in PROFILE_NAMES:
        q_model = build(model, ranges, profile=profile)
        q_pred = np.array([np.argmax(session_run(q_model, x)) for x in holdout])
        f_acc, q_acc = (f_pred == labels).mean(), (q_pred == labels).mean()
        assert q_acc >= f_acc - 0.01, (profile, f_acc, q_acc)


_sessions: dict[int, ort.InferenceSession] = {}


def session_run(model, x):
    key = id(model)
    if key not in _sessions:
        _sessions[key] = session(model)
    return _sessions[key].run(None, {"input": x[None]})[0]


def producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def init_array(model, name):
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_structure_is_what_tensorrt_and_ort_expect(cnns, profile):
    model, ranges, _ = cnns["resnet_tiny"]
    qdq = build(model, ranges, profile=profile)
    made_by = producers(qdq)
    convs = [n for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs and not any(n.op_type == "BatchNormalization" for n in qdq.graph.node)
    for conv in convs:
        x_dq, w_dq = made_by[conv.input[0]], made_by[conv.input[1]]
        # activation: DequantizeLinear(QuantizeLinear(x)), per tensor
        assert x_dq.op_type == "DequantizeLinear" and made_by[x_dq.input[0]].op_type == "QuantizeLinear"
        x_zp = init_array(qdq, x_dq.input[2])
        assert x_zp.ndim == 0
        assert x_zp.dtype == (np.int8 if profile == "tensorrt" else np.uint8)
        if profile == "tensorrt":
            assert x_zp == 0                       # TensorRT: symmetric only
        # weight: DequantizeLinear(int8 initializer), per output channel, zero point 0, |q| <= 127
        assert w_dq.op_type == "DequantizeLinear" and w_dq.input[0] not in made_by
        w_q, w_scale = init_array(qdq, w_dq.input[0]), init_array(qdq, w_dq.input[1])
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        channels = w_q.shape[axis]
        assert w_q.dtype == np.int8 and np.abs(w_q.astype(int)).max() <= 127
        assert w_scale.shape == (channels,) and not init_array(qdq, w_dq.input[2]).any()
        assert (axis == 0) if conv.op_type == "Conv" else True
        if len(conv.input) > 2:
            _check_bias(qdq, made_by, conv, profile, x_dq, w_scale)


def _check_bias(qdq, made_by, conv, profile, x_dq, w_scale):
    if profile == "tensorrt":
        assert conv.input[2] not in made_by          # float bias initializer
        assert init_array(qdq, conv.input[2]).dtype == np.float32
        return
    b_dq = made_by[conv.input[2]]
    b_q, b_scale = init_array(qdq, b_dq.input[0]), init_array(qdq, b_dq.input[1])
    assert b_q.dtype == np.int32
    np.testing.assert_allclose(b_scale, init_array(qdq, x_dq.input[1]) * w_scale, rtol=1e-6)


def test_onnxruntime_profile_fuses_every_conv_into_int8_kernels(cnns, tmp_path):
    model, ranges, _ = cnns["mobilenet_v2_small"]
    session(build(model, ranges, profile="onnxruntime"), tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Conv" not in ops and "FusedConv" not in ops and ops.count("QLinearConv") > 40
    assert "Add" not in ops                         # residual adds run as QLinearAdd


def test_same_scale_ops_share_quant_params(cnns):
    model, ranges, _ = cnns["resnet_tiny"]
    qdq = build(model, ranges, profile="onnxruntime")
    pool = next(n for n in qdq.graph.node if n.op_type == "MaxPool")
    made_by = producers(qdq)
    q_in = made_by[made_by[pool.input[0]].input[0]]
    consumers = [n for n in qdq.graph.node if pool.output[0] in n.input and n.op_type == "QuantizeLinear"]
    assert consumers
    assert init_array(qdq, q_in.input[1]) == init_array(qdq, consumers[0].input[1])
    assert init_array(qdq, q_in.input[2]) == init_array(qdq, consumers[0].input[2])


def mlp(opset=13, trans_b=1) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 16) if trans_b else (16, 8)).astype(np.float32)
    w2 = rng.normal(size=(8, 4)).astype(np.float32) * np.array([1, 10, 0.1, 1], np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=trans_b),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_and_matmul_channel_axes(trans_b):
    model = mlp(trans_b=trans_b)
    data = [{"x": np.random.default_rng(i).normal(size=(2, 16)).astype(np.float32)} for i in range(10)]
    qdq = build(model, collect_ranges(model, data, progress=False))
    made_by = producers(qdq)
    gemm = next(n for n in qdq.graph.node if n.op_type == "Gemm")
    matmul = next(n for n in qdq.graph.node if n.op_type == "MatMul")
    gemm_axis = next(a.i for a in made_by[gemm.input[1]].attribute if a.name == "axis")
    mm_dq = made_by[matmul.input[1]]
    assert gemm_axis == (0 if trans_b else 1)       # the N (output) axis of B
    assert next(a.i for a in mm_dq.attribute if a.name == "axis") in (1, -1)
    assert init_array(qdq, mm_dq.input[1]).shape == (4,)
    quantized = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert "h" not in quantized and "r" in quantized     # Gemm -> Relu: Q/DQ after the Relu only
    ref, got = session(model).run(None, data[0])[0], session(qdq).run(None, data[0])[0]
    assert sqnr_db(ref, got) > 30


def test_old_opset_is_raised_to_13_and_keep_float_is_honoured():
    model = mlp(opset=11)
    data = [{"x": np.random.default_rng(i).normal(size=(2, 16)).astype(np.float32)} for i in range(10)]
    qdq = build(model, collect_ranges(model, data, progress=False), keep_float={"fc2"})
    assert next(o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")) >= 13
    matmul = next(n for n in qdq.graph.node if n.op_type == "MatMul")
    assert matmul.input == ["r", "w2"]              # float input, float weight
    assert dict((p.key, p.value) for p in qdq.metadata_props)["ganglion.qdq.profile"] == "tensorrt"
    session(qdq).run(None, data[0])


def test_bad_arguments():
    model = mlp()
    with pytest.raises(UsageError, match="unknown node"):
        build(model, {}, keep_float={"nope"})
    with pytest.raises(UsageError):
        build(model, {}, profile="tflite")


def test_tensorrt_profile_has_only_symmetric_int8(cnns):
    # TensorRT's explicit quantization: INT8 only, zero point 0 everywhere, no int32 bias DQ.
    for model, ranges, _ in cnns.values():
        qdq_model = build(model, ranges, profile="tensorrt")
        inits = {i.name: numpy_helper.to_array(i) for i in qdq_model.graph.initializer}
        qdq_nodes = [n for n in qdq_model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert qdq_nodes
        for node in qdq_nodes:
            zero_point = inits[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:
                assert inits[node.input[0]].dtype == np.int8
                assert inits[node.input[0]].min() >= -127          # TensorRT weights: [-127, 127]


def test_keep_float_on_a_folded_batchnorm_keeps_its_conv_float(cnns):
    # auto keep-float names every node of a layer span (Conv, BatchNormalization, Clip); the BN is
    # folded away here, so keeping it means keeping the Conv it went into.
    model, ranges, holdout = cnns["mobilenet_v2_small"]
    producer = {o: n for n in model.graph.node for o in n.output}
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    conv = producer[bn.input[0]]
    qdq_model = build(model, ranges, keep_float={bn.name})
    folded_conv = next(n for n in qdq_model.graph.node if n.name == conv.name)
    assert folded_conv.output[0] == bn.output[0]
    made_by = producers(qdq_model)
    assert folded_conv.input[1] not in made_by                  # float weight, no DequantizeLinear
    assert init_array(qdq_model, folded_conv.input[1]).dtype == np.float32
    session(qdq_model).run(None, holdout[0])


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_small"])
def test_tensorrt_profile_with_calibration_samples(cnns, name):
    """With samples, the tensorrt profile quantizes only what TensorRT's placement asks for
    (inputs of weighted ops, residual Adds that read them) with a per-tensor amax (qdq/amax.py):
    still symmetric, never wider than min/max, clipped somewhere, checked and run in onnxruntime."""
    model, ranges, holdout = cnns[name]
    samples = random_samples(model, 12, seed=1)
    qdq_model = build(model, ranges, profile="tensorrt", samples=samples)
    onnx.checker.check_model(qdq_model, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq_model.graph.initializer}
    readers = {}
    for node in qdq_model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    clipped = 0
    for q in (n for n in qdq_model.graph.node if n.op_type == "QuantizeLinear"):
        assert inits[q.input[2]].dtype == np.int8 and not inits[q.input[2]].any()
        users = {r.op_type for dq in readers[q.output[0]] for r in readers[dq.output[0]]}
        assert users and users <= {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"}, users
        lo, hi = ranges[q.input[0]]
        top = max(-lo, hi) / 127
        assert float(inits[q.input[1]]) <= top * (1 + 1e-5)
        clipped += float(inits[q.input[1]]) < 0.98 * top
    assert clipped
    float_sess, q_sess = session(model), session(qdq_model)
    ref = np.concatenate([float_sess.run(None, s)[0] for s in holdout])
    got = np.concatenate([q_sess.run(None, s)[0] for s in holdout])
    assert sqnr_db(ref, got) >= 20.0
