"""Gemm / MatMul: FULLY_CONNECTED for constant weights, BATCH_MATMUL otherwise."""
import numpy as np
import pytest

from tests.converters.ops import harness as H

RNG = np.random.default_rng(2)


def w(*shape):
    return RNG.normal(0, 0.3, shape).astype(np.float32)


GEMM = {
    "transB": ({"a": (2, 16)}, {"b": w(8, 16), "c": w(8)}, dict(transB=1)),
    "plain": ({"a": (3, 16)}, {"b": w(16, 8), "c": w(8)}, {}),
    "alpha_beta": ({"a": (2, 16)}, {"b": w(16, 8), "c": w(1, 8)}, dict(alpha=0.5, beta=2.0)),
    "no_bias": ({"a": (2, 10)}, {"b": w(10, 4)}, {}),
    "matrix_bias": ({"a": (2, 10)}, {"b": w(10, 4), "c": w(2, 4)}, {}),
    "transA": ({"a": (10, 2)}, {"b": w(10, 4), "c": w(4)}, dict(transA=1)),
}


@pytest.mark.parametrize("case", GEMM, ids=list(GEMM))
def test_gemm(case):
    inputs, inits, attrs = GEMM[case]
    m = H.one_node("Gemm", inputs, inits, **attrs)
    H.check(m, expect=["FULLY_CONNECTED"], forbid=["BATCH_MATMUL"])


MATMUL = {
    "2d_const": ({"a": (4, 16)}, {"b": w(16, 8)}, "FULLY_CONNECTED"),
    "3d_const": ({"a": (2, 5, 16)}, {"b": w(16, 8)}, "FULLY_CONNECTED"),
    "batched_both": ({"a": (2, 5, 16), "b": (2, 16, 3)}, {}, "BATCH_MATMUL"),
    "broadcast": ({"a": (2, 3, 5, 8), "b": (8, 4)}, {}, "BATCH_MATMUL"),
}


@pytest.mark.parametrize("case", MATMUL, ids=list(MATMUL))
def test_matmul(case):
    inputs, inits, opcode = MATMUL[case]
    m = H.one_node("MatMul", inputs, inits)
    H.check(m, expect=[opcode], steps=3)


@pytest.mark.parametrize("op,inputs,inits", [
    ("Gemm", {"a": (2, 6), "b": (6, 3)}, {}),              # activation weight: BATCH_MATMUL path
    ("MatMul", {"a": (6,)}, {"b": w(6, 3)}),              # 1-D input: BATCH_MATMUL path
    ("MatMul", {"a": (2, 6)}, {"b": w(6, 3)}),            # FULLY_CONNECTED with fused RELU
])
def test_relu_after_matmul_is_applied_whatever_the_lowering(op, inputs, inits):
    from onnx import helper
    names = [*inputs, *inits]
    nodes = [helper.make_node(op, names, ["z"]), helper.make_node("Relu", ["z"], ["y"])]
    m = H.model(nodes, inputs, ["y"], inits)
    H.check(m, steps=3)
