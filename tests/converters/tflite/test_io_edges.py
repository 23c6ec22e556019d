"""The NCHW input's layout TRANSPOSE at the float/int8 edge (converters/tflite/io_edges.py).

A float input with few channels is transposed as float, then quantized; with many channels (and
with an int8/uint8 input, which has no float side) the QUANTIZE comes first. Either order must give
the same numbers (moving bytes is exact), LiteRT must agree with onnxruntime within int8 steps for
the NCHW signature and for ``--layout nhwc``, and the op list says which order was emitted.
"""
import numpy as np
import pytest
from onnx import helper

from converters.tflite import io_edges
from core.litert import make_interpreter
from tests.converters.ops import harness as H


def conv_net(channels: int, rank: int = 4):
    """Conv 3x3 (pad 1) -> Relu over an NCHW input of ``channels``: the stem of an image CNN
    (rank 3: a 1-D conv over NCL, the stem of an audio CNN)."""
    rng = np.random.default_rng(channels)
    spatial = rank - 2
    w = rng.normal(0, 0.5, (8, channels, *[3] * spatial)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * (2 * spatial)),
             helper.make_node("Relu", ["c"], ["y"])]
    return H.model(nodes, {"x": [1, channels, *[12] * spatial]}, ["y"], {"w": w, "b": b})


def _ops(q) -> list[tuple[str, str]]:
    """(opcode, dtype of its output) of every op."""
    interp = make_interpreter(q.flatbuffer, use_xnnpack=False)
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interp.get_tensor_details()}
    return [(op["op_name"], dtypes[op["outputs"][0]])
            for op in interp._get_ops_details()]          # noqa: SLF001 (LiteRT's only view of the nodes)


def _edge(q) -> list[tuple[str, str]]:
    """The ops before the first CONV_2D: the input edge."""
    ops = _ops(q)
    return ops[:[name for name, _ in ops].index("CONV_2D")]


def test_ncl_input_of_a_1d_conv_moves_float_too():
    m = conv_net(2, rank=3)
    q = H.convert(m, "int8", samples=H.samples_for(m))
    assert _edge(q)[:2] == [("TRANSPOSE", "float32"), ("QUANTIZE", "int8")], q.ops


@pytest.mark.parametrize("channels,expect", [
    (1, [("TRANSPOSE", "float32"), ("QUANTIZE", "int8")]),
    (3, [("TRANSPOSE", "float32"), ("QUANTIZE", "int8")]),
    (8, [("TRANSPOSE", "float32"), ("QUANTIZE", "int8")]),
    (16, [("QUANTIZE", "int8"), ("TRANSPOSE", "int8")]),
    (32, [("QUANTIZE", "int8"), ("TRANSPOSE", "int8")]),
])
def test_input_transpose_side_by_channels(channels, expect):
    m = conv_net(channels)
    samples = H.samples_for(m)
    q = H.convert(m, "int8", samples=samples)
    assert _edge(q) == expect, q.ops
    # the NCHW output's TRANSPOSE stays before the DEQUANTIZE, on int8 bytes, at any channel count
    assert _ops(q)[-2:] == [("TRANSPOSE", "int8"), ("DEQUANTIZE", "float32")], q.ops


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_integer_input_transposes_integers(io):
    m = conv_net(3)
    q = H.convert(m, "int8", samples=H.samples_for(m), io=io)
    edge = _edge(q)
    assert ("TRANSPOSE", "int8") in edge and ("TRANSPOSE", "float32") not in edge, q.ops


@pytest.mark.parametrize("channels", [1, 3, 8, 16])
@pytest.mark.parametrize("layout", ["onnx", "nhwc"])
def test_int8_matches_onnxruntime(channels, layout):
    m = conv_net(channels)
    samples = H.samples_for(m)
    q = H.convert(m, "int8", samples=samples, layout=layout)
    if layout == "nhwc":
        assert "TRANSPOSE" not in q.ops and q.inputs[0].shape[-1] == channels
    scale = H.output_scale(q)
    for feeds in samples[:3]:
        ref = H.ort_run(m, feeds)[0]
        got = H.tflite_run(q, feeds)[0]
        err = np.abs(got - ref).max() / scale
        assert err <= 3.0, f"off by {err:.2f} int8 steps; ops {q.ops}"


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_float_transpose_gives_the_same_numbers(channels, monkeypatch):
    """The order is a speed choice only: with the rule off (QUANTIZE first) every output is
    bit-identical, in XNNPACK and in the builtin kernels."""
    m = conv_net(channels)
    samples = H.samples_for(m)
    moved = H.convert(m, "int8", samples=samples)
    monkeypatch.setattr(io_edges, "NARROW", 0)
    plain = H.convert(m, "int8", samples=samples)
    assert _edge(moved)[0] == ("TRANSPOSE", "float32") and _edge(plain)[0] == ("QUANTIZE", "int8")
    for feeds in samples[:3]:
        for xnnpack in (True, False):
            np.testing.assert_array_equal(H.tflite_run(moved, feeds, use_xnnpack=xnnpack)[0],
                                          H.tflite_run(plain, feeds, use_xnnpack=xnnpack)[0])
