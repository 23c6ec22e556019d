"""Gemm / MatMul: FULLY_CONNECTED for constant weights, BATCH_MATMUL otherwise."""
import numpy as np
import pytest
from onnx import helper

from core.litert import make_interpreter

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


@pytest.mark.parametrize("seed", range(30))
def test_random_matmul_shapes(seed):
    """Random ranks 1-4 with numpy broadcasting, constant or activation right operand."""
    r = np.random.default_rng(500 + seed)
    m_, k, n = (int(v) for v in r.integers(1, 6, 3))
    batch = [int(v) for v in r.integers(1, 4, int(r.integers(0, 3)))]
    a_shape = [k] if r.random() < 0.15 else [*batch, m_, k]
    if r.random() < 0.15:
        b_shape = [k]
    else:
        b_batch = batch[len(batch) - int(r.integers(0, len(batch) + 1)):] if batch else []
        b_shape = [*([1 if r.random() < 0.3 else d for d in b_batch]), k, n]
    if r.random() < 0.5 and len(b_shape) == 2:
        m = H.one_node("MatMul", {"a": tuple(a_shape)}, {"b": w(*b_shape)})
    else:
        m = H.one_node("MatMul", {"a": tuple(a_shape), "b": tuple(b_shape)})
    H.check(m, steps=3)


@pytest.mark.parametrize("seed", range(20))
def test_random_gemm(seed):
    r = np.random.default_rng(600 + seed)
    m_, k, n = (int(v) for v in r.integers(1, 7, 3))
    ta, tb = int(r.integers(0, 2)), int(r.integers(0, 2))
    inits = {"b": w(*((n, k) if tb else (k, n)))}
    c_shape = [(), (n,), (1, n), (m_, n), (m_, 1)][int(r.integers(0, 5))]
    if r.random() < 0.8:
        inits["c"] = w(*c_shape) if c_shape else np.float32(r.normal())
    attrs = dict(transA=ta, transB=tb, alpha=float(r.choice([1.0, 0.5, 2.0])), beta=float(r.choice([1.0, 0.5])))
    m = H.one_node("Gemm", {"a": (k, m_) if ta else (m_, k)}, inits, **attrs)
    H.check(m, steps=3)


# Einsum -> Transpose/Reshape/MatMul (passes/decompose_einsum.py); (equation, inputs, constants)
EINSUM = {
    "maxvit_qk": ("B G H I D, B G H J D -> B G H I J", {"q": (1, 2, 2, 5, 4), "k": (1, 2, 2, 6, 4)}, {}),
    "maxvit_av": ("B G H I J, B G H J D -> B G H I D", {"a": (1, 2, 2, 5, 6), "v": (1, 2, 2, 6, 4)}, {}),
    "bmm": ("bij,bjk->bik", {"a": (2, 3, 4), "b": (2, 4, 5)}, {}),
    "weights": ("bsd,hd->bsh", {"a": (1, 6, 8)}, {"w": w(5, 8)}),
    "outer": ("i,j->ij", {"a": (3,), "b": (4,)}, {}),
    "ellipsis": ("...ij,...jk->...ik", {"a": (2, 3, 4), "b": (2, 4, 2)}, {}),
    "implicit": ("ij,jk", {"a": (3, 4), "b": (4, 5)}, {}),
    "permute_sum": ("nchw->nhc", {"a": (1, 3, 4, 5)}, {}),
    "sum_one_side": ("ijk,jl->il", {"a": (2, 3, 4), "b": (3, 5)}, {}),
    "two_contracted": ("bhqd,bhkd->bqk", {"q": (1, 2, 3, 4), "k": (1, 2, 5, 4)}, {}),
}


@pytest.mark.parametrize("case", EINSUM, ids=list(EINSUM))
def test_einsum(case):
    equation, inputs, inits = EINSUM[case]
    m = H.one_node("Einsum", inputs, inits, equation=equation)
    res, _ = H.check(m, atol=1e-4, steps=4.0)
    if inits:                  # constant weights: rearranged at conversion time, one FULLY_CONNECTED
        assert "FULLY_CONNECTED" in res.ops and "TRANSPOSE" not in res.ops


def test_einsum_with_a_diagonal_is_refused_with_the_reason():
    from converters.errors import UnsupportedOpsError
    m = H.one_node("Einsum", {"a": (3, 3)}, equation="ii->i")
    with pytest.raises(UnsupportedOpsError, match="diagonal"):
        H.convert(m, "none")


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_a_weight_read_by_several_layers_is_stored_once(op):
    """A hand-unrolled recurrent layer: every step's Gemm/MatMul reads the same initializer W
    (captcha-whisperer's LSTM). One weight tensor in float and in int8, not one per step."""
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.3, (16, 16)).astype(np.float32)
    nodes, x = [], "x"
    for step in range(4):
        nodes += [helper.make_node(op, [x, "w"], [f"m{step}"]), helper.make_node("Tanh", [f"m{step}"], [f"h{step}"])]
        x = f"h{step}"
    m = H.model(nodes, {"x": (2, 16)}, [x], {"w": w})
    res, q = H.check(m, steps=6)         # four int8 layers in a row: their roundings add up
    for result in (res, q):
        details = make_interpreter(result.flatbuffer).get_tensor_details()
        weights = [t["name"] for t in details if tuple(t["shape"]) == (16, 16)]
        assert len(weights) == 1, weights
