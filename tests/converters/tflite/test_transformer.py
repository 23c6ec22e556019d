"""A small transformer encoder block (attention + MLP) through the TFLite backend.

Exercises the non-CNN path: batched MatMul with a transposed operand, Softmax on the last axis,
LayerNormalization, exported erf-GELU, Reshape/Transpose head splitting, residual Adds.
"""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from tests.converters.ops import harness as H

T, D, HEADS = 8, 16, 2
I64 = np.int64


def _block():
    rng = np.random.default_rng(5)

    def w(*shape, s=0.3):
        return rng.normal(0, s, shape).astype(np.float32)

    n = helper.make_node
    hd = D // HEADS
    nodes = [
        n("LayerNormalization", ["x", "g1", "b1"], ["ln1"], axis=-1),
        *[n("MatMul", ["ln1", f"w{k}"], [k]) for k in "qkv"],
        *[n("Reshape", [k, "heads"], [f"{k}h"]) for k in "qkv"],
        n("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]),
        n("Transpose", ["kh"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["vh"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["scores"]),
        n("Mul", ["scores", "scale"], ["scaled"]),
        n("Softmax", ["scaled"], ["attn"], axis=-1),
        n("MatMul", ["attn", "vt"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctxt", "merged"], ["ctxm"]),
        n("MatMul", ["ctxm", "wo"], ["proj"]),
        n("Add", ["x", "proj"], ["res1"]),
        n("LayerNormalization", ["res1", "g2", "b2"], ["ln2"], axis=-1),
        n("MatMul", ["ln2", "wf1"], ["h1"]),
        n("Div", ["h1", "sqrt2"], ["hd"]), n("Erf", ["hd"], ["he"]),
        n("Add", ["he", "one"], ["ha"]), n("Mul", ["h1", "ha"], ["hm"]), n("Mul", ["hm", "half"], ["gelu"]),
        n("MatMul", ["gelu", "wf2"], ["h2"]),
        n("Add", ["res1", "h2"], ["y"]),
    ]
    inits = {"g1": np.ones(D, np.float32), "b1": np.zeros(D, np.float32),
             "g2": np.ones(D, np.float32), "b2": np.zeros(D, np.float32),
             "wq": w(D, D), "wk": w(D, D), "wv": w(D, D), "wo": w(D, D),
             "wf1": w(D, 2 * D), "wf2": w(2 * D, D),
             "heads": np.array([1, T, HEADS, hd], I64), "merged": np.array([1, T, D], I64),
             "scale": np.float32(1 / np.sqrt(hd)), "sqrt2": np.float32(np.sqrt(2)),
             "one": np.float32(1), "half": np.float32(0.5)}
    return H.model(nodes, {"x": (1, T, D)}, ["y"], inits)


@pytest.fixture(scope="module")
def block():
    m = _block()
    return m, H.samples_for(m, 16, low=-1.5, high=1.5)


def test_float_block_matches_and_uses_gelu(block):
    m, samples = block
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert "GELU" in res.ops and "BATCH_MATMUL" in res.ops and "SOFTMAX" in res.ops
    for s in samples[:3]:
        np.testing.assert_allclose(H.tflite_run(res, s)[0], H.ort_run(m, s)[0], atol=1e-4, rtol=1e-4)


def test_int8_block_with_measured_ranges(block):
    m, samples = block
    ranges = collect_ranges(m, samples, method="minmax", progress=False)
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8"), samples=samples)
    # everything int8 once ranges are measured, but the second LayerNorm: float between int8
    # neighbours (tflite/precision.py's NORM rule; the first one reads the float input)
    assert q.ops.count("DEQUANTIZE") == 2, q.ops
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in samples[:4]])
    got = np.concatenate([H.tflite_run(q, s)[0].ravel() for s in samples[:4]])
    sqnr = H.sqnr_db(ref, got)
    assert sqnr > 20, sqnr
    print(f"transformer block int8 SQNR {sqnr:.1f} dB, ops {q.ops}")
