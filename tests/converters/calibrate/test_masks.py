"""Attention-mask fills before a Softmax: observed as int8 holds them (``calibrate/masks.py``), and
a constant mask clipped where the int8 ADD saturates (``tflite.quantize._saturate_addends``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges, masks
from converters.verify.metrics import sqnr_db
from tests.converters.ops import harness as H

T = 16
FILLS = [-1e4, -1e9, float(np.finfo(np.float32).min), -math.inf]


def masked_attention(fill: float, mask_input: bool = False):
    """Softmax(0.5 x + mask) @ v: a causal constant mask, or ``(1 - keep) * fill`` from an input."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["q"])]
    inits = {"s": np.array(0.5, np.float32)}
    inputs = {"x": (1, T, T), "v": (1, T, 8)}
    if mask_input:
        inputs["keep"] = (1, 1, T)
        inits.update(one=np.array(1.0, np.float32), fill=np.array(fill, np.float32))
        nodes += [helper.make_node("Sub", ["one", "keep"], ["drop"]),
                  helper.make_node("Mul", ["drop", "fill"], ["m"])]
    else:
        inits["m"] = np.where(np.triu(np.ones((T, T), bool), 1), np.float32(fill), np.float32(0))
    nodes += [helper.make_node("Add", ["q", "m"], ["a"]), helper.make_node("Softmax", ["a"], ["p"]),
              helper.make_node("MatMul", ["p", "v"], ["y"])]
    return H.model(nodes, inputs, ["y"], inits)


def feeds(n, seed, mask_input=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {"x": rng.normal(0, 3, (1, T, T)).astype(np.float32), "v": rng.normal(0, 1, (1, T, 8)).astype(np.float32)}
        if mask_input:
            f["keep"] = np.ones((1, 1, T), np.float32)
            f["keep"][..., rng.integers(T // 2, T):] = 0
        out.append(f)
    return out


def int8_sqnr(m, method, mask_input=False):
    calib, holdout = feeds(16, 1, mask_input), feeds(8, 2, mask_input)
    ranges = collect_ranges(m, calib, method=method, progress=False)
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8"), samples=calib)
    ref = np.concatenate([H.ort_run(m, s)[0] for s in holdout])
    return ranges, sqnr_db(ref, np.concatenate([H.tflite_run(q, s)[0] for s in holdout]))


@pytest.mark.parametrize("method", ["minmax", "auto"])
@pytest.mark.parametrize("fill", FILLS)
def test_a_constant_mask_fill_leaves_the_scores_their_steps(fill, method):
    # before: -1e9 gave 3.6 dB, -3.4e38 a model LiteRT aborted on, -inf the wrong output (its
    # masked positions saturated to the live low end and kept weight)
    ranges, sqnr = int8_sqnr(masked_attention(fill), method)
    assert ranges["a"][0] > -30.0, ranges["a"]
    assert sqnr > 20.0, sqnr


def test_a_mask_made_from_an_input_is_clipped_where_the_sum_saturates():
    ranges, sqnr = int8_sqnr(masked_attention(-1e4, mask_input=True), "minmax", mask_input=True)
    assert ranges["m"][0] == pytest.approx(ranges["a"][0] - ranges["q"][1])
    assert sqnr > 20.0, sqnr


def test_saturate_moves_only_fills_and_keeps_them_below_every_row():
    scores = np.array([[[2.0, -1e9, 0.5, -1e9], [-3.0, -2.5, -1e9, -1e9]]], np.float32)
    got = masks.saturate(scores, -1, False)
    floor = -2.5 - math.log(masks.HALF_STEP * 4)          # the lowest row max less ln(512 T)
    np.testing.assert_array_equal(got[scores > -1e3], scores[scores > -1e3])
    np.testing.assert_allclose(got[scores < -1e3], floor, rtol=1e-6)
    assert masks.saturate(scores[:, :, :1], -1, False) is not None
    live = np.array([[1.0, -50.0, 3.0]], np.float32)            # a wide score range is not a fill
    assert masks.saturate(live, -1, False) is live
