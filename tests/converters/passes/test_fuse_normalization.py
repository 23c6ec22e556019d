"""Normalizations written out op by op (passes/fuse_normalization.py) hold int8 fidelity.

Each case is a normalization in a form an exporter writes (flax/jax2tf moments, PyTorch's
hand-written LayerNorm, T5/LLaMA RMSNorm, GroupNorm through a Reshape, an instance norm after a
channels-last Conv), on rows whose scales span 100x, as real activations do. Converted, it runs in
LiteRT against onnxruntime: float exactly, int8 above an SQNR bound the op-by-op int8 graph misses
(measured without the pass: see BOUND).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from converters.qdq import emit
from converters.tflite import precision

from tests.converters.ops import harness as H

EPS = np.asarray(1e-5, np.float32)


def _c(value) -> np.ndarray:
    return np.asarray(value, np.float32)


def _i(*values) -> np.ndarray:
    return np.asarray(values, np.int64)


def n(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, [outputs] if isinstance(outputs, str) else outputs, **attrs)


def affine(rng, last: str, d: int, gamma_shape=None, beta: bool = True):
    """Mul by gamma [+ beta] after the normalized tensor ``last``: (nodes, inits)."""
    shape = gamma_shape or (d,)
    inits = {"gamma": rng.uniform(0.5, 1.5, shape).astype(np.float32)}
    nodes = [n("Mul", [last, "gamma"], "scaled" if beta else "y")]
    if beta:
        inits["beta"] = rng.normal(0, 0.1, shape).astype(np.float32)
        nodes.append(n("Add", ["scaled", "beta"], "y"))
    return nodes, inits


def moments_sum(rng, d=32):
    """flax LayerNorm through jax2tf (magika): sums times 1/N, E[x^2] - E[x]^2, Max(0, .) guard,
    Sqrt then Reciprocal, gamma on the inverse deviation."""
    nodes = [n("ReduceSum", ["x", "ax"], "s1", keepdims=0), n("Mul", ["s1", "inv_n"], "m"),
             n("Mul", ["x", "x"], "x2"), n("ReduceSum", ["x2", "ax"], "s2", keepdims=0),
             n("Mul", ["s2", "inv_n"], "m2"), n("Mul", ["m", "m"], "mm"), n("Sub", ["m2", "mm"], "v"),
             n("Max", ["zero", "v"], "vg"), n("Unsqueeze", ["vg", "ax"], "vk"), n("Add", ["vk", "eps"], "ve"),
             n("Sqrt", ["ve"], "sd"), n("Reciprocal", ["sd"], "inv"), n("Mul", ["inv", "gamma"], "g"),
             n("Unsqueeze", ["m", "ax"], "mk"), n("Sub", ["x", "mk"], "dx"), n("Mul", ["dx", "g"], "gx"),
             n("Add", ["gx", "beta"], "y")]
    inits = {"ax": _i(2), "inv_n": _c(1.0 / d), "zero": _c(0.0), "eps": EPS,
             "gamma": rng.uniform(0.5, 1.5, d).astype(np.float32), "beta": rng.normal(0, 0.1, d).astype(np.float32)}
    return nodes, inits, (1, 24, d), 1


def moments_axis1(rng, d=32):
    """The same statistics over a middle axis (magika's first LayerNorm): ReduceMean, Reshape."""
    nodes = [n("ReduceMean", ["x"], "m", axes=[1], keepdims=0), n("Pow", ["x", "two"], "x2"),
             n("ReduceMean", ["x2"], "m2", axes=[1], keepdims=0), n("Pow", ["m", "two"], "mm"),
             n("Sub", ["m2", "mm"], "v"), n("Max", ["v", "zero"], "vg"), n("Reshape", ["vg", "kshape"], "vk"),
             n("Add", ["vk", "eps"], "ve"), n("Sqrt", ["ve"], "sd"), n("Reciprocal", ["sd"], "inv"),
             n("Reshape", ["m", "kshape"], "mk"), n("Sub", ["x", "mk"], "dx"), n("Mul", ["dx", "inv"], "y")]
    inits = {"two": _c(2.0), "zero": _c(0.0), "eps": EPS, "kshape": _i(1, 1, 24)}
    return nodes, inits, (1, d, 24), 2


def centered_pow_div(rng, d=32):
    """PyTorch's hand-written LayerNorm: (x - u) / sqrt(((x - u) ** 2).mean(-1) + eps) * w + b."""
    nodes = [n("ReduceMean", ["x"], "m", axes=[-1]), n("Sub", ["x", "m"], "dx"), n("Pow", ["dx", "two"], "sq"),
             n("ReduceMean", ["sq"], "v", axes=[-1]), n("Add", ["v", "eps"], "ve"), n("Sqrt", ["ve"], "sd"),
             n("Div", ["dx", "sd"], "nx")]
    more, inits = affine(rng, "nx", d)
    return nodes + more, {"two": _c(2.0), "eps": EPS, **inits}, (1, 24, d), 1


def torch_hand_ln(rng, d=32):
    """The same as both torch.onnx exporters write it: w * (x - u) / sqrt(v + eps) + b (gamma on
    the numerator)."""
    nodes = [n("ReduceMean", ["x"], "m", axes=[-1]), n("Sub", ["x", "m"], "dx"), n("Pow", ["dx", "two"], "sq"),
             n("ReduceMean", ["sq"], "v", axes=[-1]), n("Mul", ["gamma", "dx"], "gdx"), n("Add", ["v", "eps"], "ve"),
             n("Sqrt", ["ve"], "sd"), n("Div", ["gdx", "sd"], "nx"), n("Add", ["nx", "beta"], "y")]
    inits = {"two": _c(2.0), "eps": EPS, "gamma": rng.uniform(0.5, 1.5, d).astype(np.float32),
             "beta": rng.normal(0, 0.1, d).astype(np.float32)}
    return nodes, inits, (1, 24, d), 1


def l2_normalize(rng, d=32):
    """F.normalize(x, dim=-1) as both torch.onnx exporters write it: x / Expand(Clip(ReduceL2(x), eps))."""
    nodes = [n("ReduceL2", ["x"], "l2", axes=[-1]), n("Clip", ["l2", "eps"], "lc"),
             n("Expand", ["lc", "xshape"], "le"), n("Div", ["x", "le"], "nx")]
    more, inits = affine(rng, "nx", d, beta=False)
    return nodes + more, {"eps": _c(1e-12), "xshape": _i(1, 24, d), **inits}, (1, 24, d), 1


def rms_reciprocal(rng, d=32):
    """T5 / LLaMA RMSNorm: x * rsqrt(mean(x^2) + eps) * w (written as Reciprocal(Sqrt))."""
    nodes = [n("Pow", ["x", "two"], "sq"), n("ReduceMean", ["sq"], "v", axes=[-1]), n("Add", ["eps", "v"], "ve"),
             n("Sqrt", ["ve"], "sd"), n("Reciprocal", ["sd"], "inv"), n("Mul", ["x", "inv"], "nx")]
    more, inits = affine(rng, "nx", d, beta=False)
    return nodes + more, {"two": _c(2.0), "eps": EPS, **inits}, (1, 24, d), 1


def rms_pow_half(rng, d=32):
    """RMSNorm with the root as Pow(., 0.5) and the inverse as Div(1, .) (torch's rsqrt, TorchScript
    exporter)."""
    nodes = [n("Mul", ["x", "x"], "sq"), n("ReduceMean", ["sq"], "v", axes=[-1]), n("Add", ["v", "eps"], "ve"),
             n("Pow", ["ve", "half"], "sd"), n("Div", ["one", "sd"], "inv"), n("Mul", ["inv", "x"], "nx")]
    more, inits = affine(rng, "nx", d, beta=False)
    return nodes + more, {"half": _c(0.5), "one": _c(1.0), "eps": EPS, **inits}, (1, 24, d), 1


def rms_sum_square_div(rng, d=32):
    """RMSNorm as x / sqrt(ReduceSumSquare(x) / N + eps)."""
    nodes = [n("ReduceSumSquare", ["x"], "ss", axes=[-1]), n("Div", ["ss", "count"], "v"),
             n("Add", ["v", "eps"], "ve"), n("Sqrt", ["ve"], "sd"), n("Div", ["x", "sd"], "nx")]
    more, inits = affine(rng, "nx", d, beta=False)
    return nodes + more, {"count": _c(d), "eps": EPS, **inits}, (1, 24, d), 1


def group_norm(rng, c=8):
    """GroupNorm(2 groups) as PyTorch users write it: Reshape to (N, G, -1), centered statistics,
    Reshape back, per-channel gamma and beta."""
    nodes = [n("Reshape", ["x", "gshape"], "xg"), n("ReduceMean", ["xg"], "m", axes=[2]),
             n("Sub", ["xg", "m"], "dx"), n("Mul", ["dx", "dx"], "sq"), n("ReduceMean", ["sq"], "v", axes=[2]),
             n("Add", ["v", "eps"], "ve"), n("Sqrt", ["ve"], "sd"), n("Div", ["dx", "sd"], "ng"),
             n("Reshape", ["ng", "xshape"], "nx")]
    more, inits = affine(rng, "nx", c, gamma_shape=(c, 1, 1))
    inits.update(gshape=_i(1, 4, -1), xshape=_i(1, c, 6, 6), eps=EPS)
    return nodes + more, inits, (1, c, 6, 6), 1


def conv_instance_norm(rng, c=8):
    """An instance norm over H, W after a Conv: the statistics of a channels-last tensor."""
    w = rng.normal(0, 0.3, (c, 3, 3, 3)) * np.geomspace(0.3, 3.0, c)[:, None, None, None]
    nodes = [n("Conv", ["x", "w"], "h", pads=[1, 1, 1, 1]), n("ReduceMean", ["h"], "m", axes=[2, 3]),
             n("Sub", ["h", "m"], "dx"), n("Mul", ["dx", "dx"], "sq"), n("ReduceMean", ["sq"], "v", axes=[2, 3]),
             n("Add", ["v", "eps"], "ve"), n("Pow", ["ve", "minus_half"], "inv"), n("Mul", ["dx", "inv"], "y")]
    return nodes, {"w": w.astype(np.float32), "eps": EPS, "minus_half": _c(-0.5)}, (1, 3, 8, 8), None


CASES = {f.__name__: f for f in (moments_sum, moments_axis1, centered_pow_div, torch_hand_ln, rms_reciprocal,
                                  rms_pow_half, rms_sum_square_div, l2_normalize, group_norm, conv_instance_norm)}
# int8 holdout SQNR (dB) each case must reach. Without the pass (the op-by-op int8 graph) they
# measured: moments_sum -2.8, moments_axis1 -2.6, centered_pow_div 12.2, torch_hand_ln 10.3,
# rms_reciprocal 12.9, rms_pow_half 12.9, rms_sum_square_div -4.3, l2_normalize -4.3, group_norm
# 12.4, conv_instance_norm 24.8 (its per-tensor int8 Conv output bounds it); with it 35.2, 140
# (all float), 35.2, 35.2, 38.0, 38.0, 38.0, 38.0, 31.7, 27.5.
BOUND = {"conv_instance_norm": 26.5}


def build(name: str, opset: int = 17) -> onnx.ModelProto:
    nodes, inits, shape, _ = CASES[name](np.random.default_rng(8))
    return H.model(at_opset(nodes, inits, opset), {"x": shape}, ["y"], inits, opset=opset)


def at_opset(nodes, inits: dict, opset: int) -> list:
    """ReduceMean's (ReduceL2's, ReduceSumSquare's) axes attribute is an input from opset 18 on."""
    if opset < 18:
        return nodes
    out = []
    for node in nodes:
        if node.op_type in ("ReduceMean", "ReduceL2", "ReduceSumSquare"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            inits[node.output[0] + "_axes"] = _i(*attrs.pop("axes"))
            node = n(node.op_type, [node.input[0], node.output[0] + "_axes"], node.output[0], **attrs)
        out.append(node)
    return out


def rows(name: str, count: int, seed: int) -> list[dict]:
    """Inputs whose rows (along the case's scaled axis) span scales 0.05 .. 5."""
    _, _, shape, axis = CASES[name](np.random.default_rng(8))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.normal(0.3, 1.0, shape)
        if axis is not None:
            scale = np.geomspace(0.05, 5.0, shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
            x = x * scale
        out.append({"x": x.astype(np.float32)})
    return out


def float_build(m: onnx.ModelProto, feeds: dict, atol: float = 1e-4, rtol: float = 1e-4):
    """The float TFLite build of ``m``, checked against onnxruntime on ``feeds``."""
    res = H.convert(m)
    np.testing.assert_allclose(H.tflite_run(res, feeds)[0], H.ort_run(m, feeds)[0], atol=atol, rtol=rtol)
    return res


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_out_normalization_is_one_rsqrt_and_exact_in_float(name):
    res = float_build(build(name), rows(name, 1, 0)[0])
    assert res.ops.count("RSQRT") == 1 and "SQRT" not in res.ops and "DIV" not in res.ops, res.ops


def int8_sqnr(m: onnx.ModelProto, calib: list[dict], holdout: list[dict]):
    """(holdout SQNR of the int8 TFLite model calibrated min/max on ``calib``, its build)."""
    ranges = H.collect_ranges(m, calib, method="minmax", progress=False)
    q = H.tflite.build(m, ranges, H.tflite.TFLiteOptions(quantize="int8"), samples=calib)
    ref = np.concatenate([H.ort_run(m, s)[0] for s in holdout])
    got = np.concatenate([H.tflite_run(q, s)[0] for s in holdout])
    return H.sqnr_db(ref, got), q


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_out_normalization_holds_int8_fidelity(name):
    sqnr, q = int8_sqnr(build(name), rows(name, 16, 0), rows(name, 4, 1))
    assert sqnr > BOUND.get(name, 30.0), q.ops


def unbiased_variance():
    # torch.var's default divides by N - 1: not a normalization this pass may rewrite as one
    nodes = [n("ReduceMean", ["x"], "m", axes=[-1]), n("Sub", ["x", "m"], "dx"), n("Mul", ["dx", "dx"], "sq"),
             n("ReduceSum", ["sq", "ax"], "ss"), n("Div", ["ss", "n1"], "v"), n("Add", ["v", "eps"], "ve"),
             n("Sqrt", ["ve"], "sd"), n("Div", ["dx", "sd"], "y")]
    return nodes, {"ax": _i(-1), "n1": _c(31.0), "eps": EPS}, (1, 24, 32), 1


def misaligned_statistic():
    # a mean over the last axis broadcast along the middle one (keepdims=0, no reshape): not a
    # per-row statistic, so nothing is fused
    nodes = [n("ReduceMean", ["x"], "m", axes=[2], keepdims=0), n("Sub", ["x", "m"], "dx"),
             n("Mul", ["dx", "dx"], "sq"), n("ReduceMean", ["sq"], "v", axes=[2], keepdims=0),
             n("Add", ["v", "eps"], "ve"), n("Sqrt", ["ve"], "sd"), n("Div", ["dx", "sd"], "y")]
    return nodes, {"eps": EPS}, (1, 16, 16), 1


@pytest.mark.parametrize("make", [unbiased_variance, misaligned_statistic], ids=lambda f: f.__name__)
def test_lookalikes_are_left_as_written(make):
    nodes, inits, shape, _ = make()
    m = H.model(nodes, {"x": shape}, ["y"], inits)
    res = float_build(m, {"x": np.random.default_rng(8).normal(0.3, 1.0, shape).astype(np.float32)})
    assert "RSQRT" not in res.ops and "SQRT" in res.ops, res.ops


@pytest.mark.parametrize("opset", [15, 17, 18])
@pytest.mark.parametrize("name", ["moments_sum", "moments_axis1", "rms_reciprocal", "l2_normalize",
                                  "conv_instance_norm"])
def test_qdq_writer_writes_normalize_as_onnx(name, opset):
    # LayerNormalization where the opset has it and the axes are trailing, else the centered form
    m = build(name, opset)
    written, origin = emit.emit(emit.ir_graph(m), m)
    onnx.checker.check_model(written, full_check=True)
    ops = [node.op_type for node in written.graph.node]
    trailing_ln = name in ("moments_sum", "conv_instance_norm") and opset >= emit.LAYER_NORM_OPSET
    assert ("LayerNormalization" in ops) == trailing_ln and ("Sqrt" in ops or "ReduceL2" in ops) != trailing_ln, ops
    assert "Reciprocal" not in ops and ("Max" in ops) == (name == "l2_normalize"), ops   # the l2 floor
    feeds = rows(name, 1, 2)[0]
    np.testing.assert_allclose(H.ort_run(written, feeds)[0], H.ort_run(m, feeds)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kept", ["Sqrt_3", "Mul_5"])
def test_keeping_the_sqrt_or_the_output_node_float_keeps_the_normalization_float(kept, monkeypatch):
    # tflite/precision.py's NORM rule keeps every normalization float by default; with the rule off
    # the statistics run int8, and --keep-float of either absorbed node still keeps them float
    monkeypatch.setattr(precision, "normalizations", lambda tg: set())
    m = build("rms_reciprocal")
    assert {node.name for node in m.graph.node} >= {kept}
    samples = [{"x": s["x"] / s["x"].std(axis=-1, keepdims=True)} for s in rows("rms_reciprocal", 8, 0)]
    ranges = H.collect_ranges(m, samples, method="minmax", progress=False)
    default = H.tflite.build(m, ranges, H.tflite.TFLiteOptions(quantize="int8"), samples=samples)
    float_norm = H.tflite.build(m, ranges, H.tflite.TFLiteOptions(quantize="int8", keep_float=frozenset({kept})),
                                samples=samples)
    statistics = ["MUL", "MEAN", "ADD", "RSQRT", "MUL"]
    assert default.ops[:6] == ["QUANTIZE", *statistics], default.ops           # int8 from the input on
    assert float_norm.ops[:6] == [*statistics, "QUANTIZE"], float_norm.ops     # float, then int8 gamma
