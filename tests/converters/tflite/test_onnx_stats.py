"""The TFLite build takes the calibration pass's channel means and copied ranges instead of a
LiteRT float pass (tflite/onnx_stats.py): the int8 model it writes matches the measured one."""
from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import helper

from converters import tflite
from converters.calibrate.runner import collect_stats
from converters.tflite import onnx_stats
from converters.tflite import ranges as ranges_mod
from converters.tgraph import TGraph, TOp, TTensor
from core.litert import make_interpreter
from tests.converters.ops import harness as H
from tests.converters.ops.test_recurrent import recurrent_model

RNG = np.random.default_rng(7)


def _w(*shape):
    return RNG.normal(0, 0.3, shape).astype(np.float32)


# (name, nodes, inputs, initializers): each layer reads a tensor whose channel means the build needs
CASES = [
    ("conv_stride2_pad", [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
     {"x": (1, 3, 8, 8)}, {"w": _w(4, 3, 3, 3), "b": _w(4)}),
    ("conv_relu_conv", [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 0, 1, 1]),
                        helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("Conv", ["r", "w2", "b2"], ["y"])],
     {"x": (1, 3, 6, 6)}, {"w": _w(5, 3, 3, 3), "b": _w(5), "w2": _w(2, 5, 1, 1), "b2": _w(2)}),
    ("gemm", [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": (2, 6)}, {"w": _w(3, 6), "b": _w(3)}),
    ("matmul_3d", [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
     {"x": (1, 5, 6)}, {"w": _w(6, 4), "b": _w(4)}),
    ("conv_transpose", [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])],
     {"x": (1, 3, 4, 4)}, {"w": _w(3, 2, 2, 2), "b": _w(2)}),
    # a BatchNormalization no layer absorbs: MUL by a per-channel scale, whose output no ONNX tensor holds
    ("batchnorm_alone", [helper.make_node("Relu", ["x"], ["r"]),
                         helper.make_node("BatchNormalization", ["r", "s", "t", "mu", "var"], ["n"]),
                         helper.make_node("Conv", ["n", "w", "b"], ["y"])],
     {"x": (1, 3, 5, 5)}, {"s": _w(3), "t": _w(3), "mu": _w(3), "var": np.abs(_w(3)) + 0.5,
                           "w": _w(2, 3, 1, 1), "b": _w(2)}),
    # an Identity in front of the layer (Paddle exports): the frontend drops it, and the layer reads
    # the Identity's input, whose statistics the pass must gather under that name
    ("identity_conv", [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["i"]),
                       helper.make_node("Identity", ["i"], ["i2"]),
                       helper.make_node("Conv", ["i2", "w", "b"], ["y"])],
     {"x": (1, 3, 5, 5)}, {"w": _w(2, 3, 1, 1), "b": _w(2)}),
    ("identity_batchnorm", [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["i"]),
                            helper.make_node("BatchNormalization", ["i", "s", "t", "mu", "var"], ["n"]),
                            helper.make_node("Identity", ["n"], ["n2"]),
                            helper.make_node("Conv", ["n2", "w", "b"], ["y"])],
     {"x": (1, 3, 5, 5)}, {"s": _w(3), "t": _w(3), "mu": _w(3), "var": np.abs(_w(3)) + 0.5,
                           "w": _w(2, 3, 1, 1), "b": _w(2)}),
]


def _biases(result) -> list[np.ndarray]:
    interp = make_interpreter(result.flatbuffer)
    found = [interp.get_tensor(d["index"]) for d in interp.get_tensor_details()
             if d["dtype"] == np.int32 and len(d["shape"]) == 1 and d["quantization_parameters"]["scales"].size]
    assert found                                    # int32 biases with their scales
    return found


@pytest.mark.parametrize("name,nodes,inputs,inits", CASES, ids=[c[0] for c in CASES])
def test_calibration_means_replace_the_litert_pass(name, nodes, inputs, inits, monkeypatch):
    m = H.model(nodes, inputs, ["y"], inits)
    data = [{k: RNG.uniform(0, 3, s).astype(np.float32) for k, s in inputs.items()} for _ in range(10)]
    stats = collect_stats(m, data[:6], progress=False)
    measured = tflite.build(m, stats.ranges, tflite.TFLiteOptions(), samples=data[:6])

    def no_float_pass(*args, **kwargs):
        raise AssertionError("the LiteRT float pass ran")
    monkeypatch.setattr(ranges_mod, "measure_stats", no_float_pass)
    from_onnx = tflite.build(m, stats.ranges, tflite.TFLiteOptions(), samples=data[:6], stats=stats)
    assert from_onnx.ops == measured.ops
    plain = tflite.build(m, stats.ranges, tflite.TFLiteOptions())          # no samples: no correction
    assert from_onnx.flatbuffer != plain.flatbuffer                        # the means were used
    for a, b in zip(_biases(from_onnx), _biases(measured), strict=True):
        assert np.abs(a.astype(np.int64) - b).max() <= 1                   # float32 sums in another order
    step = H.output_scale(measured)
    for sample in data[6:]:
        np.testing.assert_allclose(H.tflite_run(from_onnx, sample)[0], H.tflite_run(measured, sample)[0],
                                   atol=1.01 * step)


def _chain(opcodes_and_consts) -> TGraph:
    """x [1, 4, 6, 6] (an ONNX tensor, stored NHWC: perm (0, 2, 3, 1)) -> ops in a row."""
    tg = TGraph()
    x = tg.add(TTensor("x", (1, 6, 6, 4), perm=(0, 2, 3, 1)))
    tg.inputs = [x]
    prev = x
    for opcode, const, shape, *options in opcodes_and_consts:
        value = np.asarray(const)
        value = value.astype(np.float32 if value.dtype.kind == "f" else np.int32)
        c = tg.add(TTensor(f"{opcode}_c", value.shape, str(value.dtype), data=value))
        out = tg.add(TTensor(f"{opcode}_out", shape))
        tg.ops.append(TOp(opcode, [prev, c], [out], *options))
        prev = out
    return tg


def test_layer_means_follow_transposes_zero_pads_and_reshapes():
    mean = np.array([1.0, 2.0, 3.0, 4.0])
    tg = _chain([("TRANSPOSE", [0, 3, 1, 2], (1, 4, 6, 6)),          # back to NCHW: channel axis 1
                 ("TRANSPOSE", [0, 2, 3, 1], (1, 6, 6, 4)),
                 ("PAD", [[0, 0], [1, 1], [1, 1], [0, 0]], (1, 8, 8, 4)),
                 ("RESHAPE", [64, 4], (64, 4)),
                 ("SLICE", [0, 0], (32, 4))])
    found, unresolved = onnx_stats.layer_means(tg, [0, 4, 6, 8, 10], {("x", 1): mean})
    assert unresolved == {10}                                         # a SLICE keeps some rows only
    for i in (0, 4):
        np.testing.assert_array_equal(found[i], mean)
    np.testing.assert_allclose(found[6], mean * 36 / 64)              # zeros: each sum over more values
    np.testing.assert_allclose(found[8], mean * 36 / 64)
    assert onnx_stats.layer_means(tg, [2], {("x", 1): mean}) == ({}, {2})        # NCHW: its last axis is W
    assert onnx_stats.layer_means(tg, [0], {("x", 1): mean[:3]}) == ({}, {0})    # lengths disagree


def test_copied_ranges_only_for_exact_copies():
    relu6 = schema.AddOptionsT()
    relu6.fusedActivationFunction = 3
    tg = _chain([("TRANSPOSE", [0, 3, 1, 2], (1, 4, 6, 6)),
                 ("PAD", [[0, 0], [0, 0], [1, 1], [1, 1]], (1, 4, 8, 8)),
                 ("MUL", [-2.0], (1, 4, 8, 8)),                      # one value: exact
                 ("ADD", [5.0], (1, 4, 8, 8), relu6),                 # and the fused clamp
                 ("MUL", [[[[1.0]], [[2.0]], [[1.0]], [[3.0]]]], (1, 4, 8, 8)),   # per channel: measured
                 ("RESHAPE", [4, 64], (4, 64))])
    found = onnx_stats.copied_ranges(tg, {0: (0.5, 3.0)}, [2, 4, 6, 8, 10, 12])
    assert found == {2: (0.5, 3.0), 4: (0.0, 3.0), 6: (-6.0, 0.0), 8: (0.0, 5.0)}
    back = onnx_stats.copied_ranges(tg, {12: (1.0, 2.0)}, [2, 4, 6, 8, 10])     # a copy's source
    assert back == {10: (1.0, 2.0)}


def test_per_channel_arithmetic_from_per_channel_ranges():
    tg = _chain([("MUL", [1.0, -1.0, 2.0, 0.5], (1, 6, 6, 4))])          # along x's last axis: ONNX axis 1
    per_channel = {("x", 1): (np.array([0.0, 1, 2, 3]), np.array([1.0, 2, 3, 4]))}
    assert onnx_stats.copied_ranges(tg, {0: (0.0, 4.0)}, [2], per_channel) == {2: (-2.0, 6.0)}
    assert onnx_stats.copied_ranges(tg, {0: (0.0, 4.0)}, [2], {("x", 3): per_channel[("x", 1)]}) == {}
    assert onnx_stats.copied_ranges(tg, {0: (0.0, 4.0)}, [2]) == {}                 # no per-channel ranges


@pytest.mark.parametrize("int8_recurrent", [False, True])
def test_a_recurrence_kept_float_needs_no_float_pass(int8_recurrent, monkeypatch):
    """The unrolled gates of an LSTM kept float (the default) need no ranges: nothing is measured,
    and the model is the one the measured build writes. In int8 they are measured."""
    m = recurrent_model("LSTM", outputs=("Y", "Y_h", ""))
    data = H.samples_for(m, 6, seed=2)
    stats = collect_stats(m, data, progress=False)
    options = tflite.TFLiteOptions(int8_recurrent=int8_recurrent)
    measured = tflite.build(m, stats.ranges, options, samples=data)
    calls = []
    original = ranges_mod.measure_stats
    monkeypatch.setattr(ranges_mod, "measure_stats", lambda *a, **k: calls.append(k) or original(*a, **k))
    from_onnx = tflite.build(m, stats.ranges, options, samples=data, stats=stats)
    assert bool(calls) == int8_recurrent
    assert from_onnx.flatbuffer == measured.flatbuffer
