"""The ``auto`` observer: the paired test, the group search, the fake-quant scorer, streaming."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges, runner, select
from converters.verify.metrics import sqnr_db
from tests.converters.ops import harness as H


def test_better_needs_a_gain_beyond_sampling_noise():
    old = np.array([1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.0, 1.0])
    assert select.better(old * 0.8, old)                       # every sample gains
    swing = np.array([0.3, -0.3] * 4)
    assert not select.better(old + swing - 0.01, old)         # lower sum, far within the spread
    assert select.better(old + swing - 0.3, old)              # z = -2.6: a gain
    ruined = old * 0.7
    ruined[3] = 5.0                                            # most gain, one is ruined: the sum loses
    assert not select.better(ruined, old)
    assert not select.better(np.array([np.nan] * 8), old)


def test_choose_keeps_minmax_unless_beaten_and_switches_single_groups():
    order = [f"t{i}" for i in range(8)]
    candidates = {m: {t: (float(k), float(k)) for t in order} for k, m in enumerate(["minmax", "a", "b"])}
    rng = np.random.default_rng(0)
    base = rng.uniform(0.9, 1.1, 16)

    def score(ranges):       # method "a" helps on t0..t1 (group 0) and hurts everywhere else
        noise = base.copy()
        for t, (lo, _) in ranges.items():
            gain = 0.05 if t in ("t0", "t1") else -0.05
            noise = noise - gain * base * (lo == 1.0)
        return noise

    ranges, chosen = select.choose(candidates, order, score)
    assert chosen == {t: ("a" if t in ("t0", "t1") else "minmax") for t in order}
    assert ranges["t0"] == (1.0, 1.0) and ranges["t5"] == (0.0, 0.0)
    calls = []
    select.choose(candidates, order, lambda r: calls.append(1) or score(r), max_runs=3)
    assert len(calls) == 3                                     # the uniform round only


@pytest.mark.parametrize("first_wins", [True, False])
def test_the_harder_clip_is_scored_whether_or_not_the_softer_one_won(first_wins):
    """The ViT: percentile:99.999 loses to min/max in held-out scoring, 99.99 wins clearly."""
    order = ["t0", "t1"]
    soft, hard = select.LADDER
    candidates = {m: {t: (float(k), float(k)) for t in order} for k, m in enumerate(["minmax", soft, hard])}
    base = np.random.default_rng(2).uniform(0.9, 1.1, 16)
    factor = {0.0: 1.0, 1.0: 0.8 if first_wins else 1.2, 2.0: 0.4}     # by method index (the range)
    scored = []

    def score(ranges):
        lo = ranges["t0"][0]
        scored.append(lo)
        return base * factor[lo] + (0.3 * np.sin(np.arange(16)) if lo == 2.0 else 0.0)
    _, chosen = select.choose(candidates, order, score, max_runs=3)
    assert chosen == {t: hard for t in order} and scored == [0.0, 1.0, 2.0]


def test_the_harder_clip_needs_a_clear_win():
    order = ["t0"]
    soft, hard = select.LADDER
    candidates = {m: {"t0": (float(k), float(k))} for k, m in enumerate(["minmax", soft, hard])}
    base = np.random.default_rng(3).uniform(0.9, 1.1, 16)
    swing = 0.3 * np.sin(np.arange(16))
    for edge, taken in ((0.15, False), (0.4, True)):      # z -2.1 (a win at Z = 0.5), then -6.8
        noise = {0.0: base, 1.0: base * 0.8, 2.0: base * 0.8 - edge + swing}
        _, chosen = select.choose(candidates, order, lambda r: noise[r["t0"][0]], max_runs=3)
        assert chosen["t0"] == (hard if taken else soft), edge


def mlp(rows: int = 4):
    rng = np.random.default_rng(1)
    inits = {"w1": rng.normal(0, 0.3, (16, 32)).astype(np.float32),
             "w2": rng.normal(0, 0.3, (32, 8)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return H.model(nodes, {"x": (rows, 16)}, ["y"], inits)


def heavy_tailed(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(0, 1, (4, 16))
        x[rng.random((4, 16)) < 0.004] *= 40                   # rare outliers: clipping pays
        out.append({"x": x.astype(np.float32)})
    return out


def test_fake_quant_model_rounds_each_tensor_like_int8():
    m = mlp()
    names = ["x", "h", "r", "y"]
    fq = runner.make_session(select.fake_quant_model(m, names))
    feed = heavy_tailed(1, 2)[0]
    ranges = {"x": (-3.0, 3.0), "h": (-4.0, 4.0), "r": (0.0, 4.0), "y": (-5.0, 5.0)}
    params = {}
    for n in names:
        s, z = select.int8_params(*ranges[n])
        params.update({f"{n}::s": np.array(s, np.float32), f"{n}::z": np.array(z, np.int8)})

    def q(v, n):
        s, z = select.int8_params(*ranges[n])
        return (np.clip(np.round(v / s) + z, -128, 127) - z) * s
    w = {i.name: np.frombuffer(i.raw_data, np.float32).reshape(i.dims) for i in m.graph.initializer}
    rounded = {}
    for k, wi in w.items():
        sc = np.abs(wi).max(axis=0, keepdims=True) / 127
        rounded[k] = np.round(wi / sc) * sc
    h = q(q(feed["x"], "x") @ rounded["w1"], "h")
    want = q(q(np.maximum(h, 0), "r") @ rounded["w2"], "y")
    got = fq.run(None, {**feed, **params})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 12])
def test_the_fake_quant_copy_of_an_old_opset_model_runs(opset):
    """Q/DQ need opset 13; raising the number alone left Squeeze's ``axes`` attribute, which
    onnxruntime refuses at 13 (the CRNN recognizer under --observer auto)."""
    m = H.model([helper.make_node("Squeeze", ["x"], ["y"], axes=[0, 2])], {"x": (1, 4, 1, 3)}, ["y"], opset=opset)
    fq = runner.make_session(select.fake_quant_model(m, ["x", "y"]))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4, 1, 3)).astype(np.float32)
    s, z = select.int8_params(-1.0, 1.0)
    params = {f"{n}::{k}": np.array(v, t) for n in ("x", "y") for k, v, t in (("s", s, np.float32), ("z", z, np.int8))}
    got = fq.run(None, {"x": x, **params})[0]
    np.testing.assert_allclose(got, x.reshape(4, 3), atol=s)


def test_auto_is_at_least_as_good_as_every_fixed_method():
    m = mlp()
    calib, holdout = heavy_tailed(48, 3), heavy_tailed(16, 4)
    ref = np.concatenate([H.ort_run(m, s)[0] for s in holdout])

    def sqnr(method):
        ranges = collect_ranges(m, calib, method=method, progress=False)
        q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8"), samples=calib)
        return sqnr_db(ref, np.concatenate([H.tflite_run(q, s)[0] for s in holdout]))
    fixed = {m_: sqnr(m_) for m_ in ("minmax", "percentile:99.99", "percentile:99.999", "mse")}
    auto = sqnr("auto")
    assert auto >= max(fixed.values()) - 0.5, (auto, fixed)


@pytest.mark.parametrize("method", ["minmax", "auto"])
def test_calibration_streams_its_samples(method):
    # A generator of 40 samples: at any time the runner holds at most the scoring samples auto
    # keeps (select.EVAL_SAMPLES) plus the one in flight; observers keep summaries only.
    m = mlp()
    alive: list[weakref.ref] = []
    held = []

    def stream():
        for k in range(40):
            sample = heavy_tailed(1, k)[0]          # made on demand: the test holds none of them
            held.append(sum(r() is not None for r in alive))
            alive.append(weakref.ref(sample["x"]))
            yield sample
            del sample
    ranges = collect_ranges(m, stream(), method=method, progress=False)
    assert set(ranges) == {"x", "h", "r", "y"}
    limit = (select.EVAL_SAMPLES if method == "auto" else 0) + 1
    assert max(held) <= limit, held
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    found, kept, count = runner.observe(m, heavy_tailed(40, 5), method, types, inputs, produced, False)
    assert count == 40 and len(kept) == limit - 1
    for obs in found.values():         # running summaries: a fixed-size histogram at most
        arrays = [v for v in vars(obs).values() if isinstance(v, np.ndarray)]
        assert all(a.size <= 8192 for a in arrays)


def test_auto_leaves_constant_tensors_alone():
    # A Resize whose scales come from a Constant node: rounding 2.0 like an activation made the
    # fake-quant model's Resize drop rows (a YOLO-style FPN failed in onnxruntime).
    scales = np.array([1, 1, 2, 2], np.float32)
    nodes = [helper.make_node("Constant", [], ["scales"], value=helper.make_tensor(
                 "scales", 1, [4], scales)),
             helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Relu", ["up"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 5, 7)}, ["y"])
    assert runner.activations(m) == {"x", "up", "y"}
    calib = [{"x": np.random.default_rng(k).normal(size=(1, 3, 5, 7)).astype(np.float32)} for k in range(12)]
    ranges = collect_ranges(m, calib, method="auto", progress=False)
    assert {"x", "up", "y"} <= set(ranges)


def test_scorer_gives_each_fold_its_own_ranges():
    # per-fold ranges: sample k is rounded with fold k % 2's; a plain range serves every fold
    m = H.model([helper.make_node("Relu", ["x"], ["y"])], {"x": (1, 64)}, ["y"])
    x = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None]
    samples = [{"x": x}, {"x": x}]
    scorer = select.Scorer(m, ["x", "y"], samples, [[x], [x]], runner.make_session)
    fine, coarse = (0.0, 1.0), (0.0, 100.0)
    same = scorer({"x": fine, "y": fine})
    split = scorer({"x": (fine, coarse), "y": (fine, coarse)})
    assert split[0] == pytest.approx(same[0])
    assert split[1] > 100 * split[0]
    assert scorer.runs == 2


def test_choose_returns_the_final_ranges_of_the_methods_it_scored():
    order = ["a", "b"]
    scored = {"minmax": {t: ((0.0, 9.0), (0.0, 9.0)) for t in order},
              "p": {t: ((0.0, 1.0), (0.0, 1.0)) for t in order}}
    final = {"minmax": {t: (0.0, 10.0) for t in order}, "p": {t: (0.0, 2.0) for t in order}}
    base = np.linspace(1.0, 2.0, 12)
    ranges, chosen = select.choose(scored, order, lambda r: base * _top(r["a"]), final=final)
    assert chosen == {"a": "p", "b": "p"} and ranges == {"a": (0.0, 2.0), "b": (0.0, 2.0)}


def _top(rng):
    """The upper end of a plain range or of fold 0's."""
    return rng[0][1] if isinstance(rng[0], tuple) else rng[1]


def test_choose_charges_each_method_with_the_range_it_returns():
    """Min/max of half the samples (held out) is narrower than of all of them, the range returned:
    scored held out only, min/max looked best (PP-OCRv6 rec) though its returned range is the
    noisiest. Each sample is charged with the worse of its held-out and returned ranges' noise."""
    order = ["a"]
    scored = {"minmax": {"a": ((0.0, 4.0), (0.0, 4.0))}, "p": {"a": ((0.0, 5.0), (0.0, 5.0))}}
    final = {"minmax": {"a": (0.0, 9.0)}, "p": {"a": (0.0, 5.5)}}
    calls = []

    def score(ranges):          # noise grows with the step: a wider grid rounds coarser
        calls.append(ranges)
        return np.linspace(1.0, 1.2, 16) * _top(ranges["a"])

    ranges, chosen = select.choose(scored, order, score, final=final, max_runs=5)
    assert chosen == {"a": "p"} and ranges == {"a": (0.0, 5.5)}
    assert len(calls) == 4      # both methods, held out and as returned; a group trial needs 2 more
    _, alone = select.choose(scored, order, score)
    assert alone == {"a": "minmax"}     # the held-out ranges alone


def outlier_batches(n, seed, outlier):
    """x ~ N(0, 1) of 4096 values per sample; with ``outlier``, sample 0 holds one value of 60."""
    rng = np.random.default_rng(seed)
    out = [{"x": rng.normal(0, 1, (256, 16)).astype(np.float32)} for _ in range(n)]
    if outlier:
        out[0]["x"][3, 5] = 60.0
    return out


def test_auto_scores_ranges_on_samples_they_did_not_come_from():
    """One calibration sample holds an outlier no other input has. Scored on the samples the
    ranges came from, min/max covers it exactly and wins, and held-out data then pays steps 13x
    too coarse; scored across folds, the outlier is clipped either way where it is unseen, and
    percentile's finer steps show: ``auto`` picks them, and held-out SQNR follows."""
    m = mlp(rows=256)
    calib, holdout = outlier_batches(32, 6, True), outlier_batches(8, 7, False)
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    found, kept, _ = runner.observe(m, calib, "auto", types, inputs, produced, False)
    full, heldout = select.candidate_tables(found)
    scorer = select.Scorer(m, list(found), [f for f, _ in kept], [r for _, r in kept], runner.make_session)
    _, in_sample = select.choose(full, list(found), scorer, max_runs=2)
    _, across = select.choose(heldout, list(found), scorer, final=full, max_runs=2)
    assert set(in_sample.values()) == {"minmax"}
    assert len(set(across.values())) == 1 and set(across.values()) <= set(select.LADDER)   # a percentile rung
    ref = np.concatenate([H.ort_run(m, s)[0] for s in holdout])

    def sqnr(method):
        ranges = collect_ranges(m, calib, method=method, progress=False)
        q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8"), samples=calib)
        return sqnr_db(ref, np.concatenate([H.tflite_run(q, s)[0] for s in holdout]))
    assert sqnr("auto") > sqnr("minmax") + 2.0          # measured: 22.4 vs 19.1 dB


@pytest.mark.parametrize("clip, fused", [((0.0, 6.0), True), ((0.0, 4.0), False)])
def test_the_scorer_skips_tensors_tflite_fuses_away(clip, fused):
    """Conv -> BatchNormalization -> Clip is one CONV_2D in TFLite: only the Clip's output is
    rounded. Clip(0, 4) is no fused activation (its own op): its input is rounded too."""
    rng = np.random.default_rng(2)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
             **{k: rng.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("g", "b", "m", "v")},
             "lo": np.array(clip[0], np.float32), "hi": np.array(clip[1], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
             helper.make_node("Clip", ["n", "lo", "hi"], ["y"]),
             helper.make_node("Conv", ["x", "w"], ["c2"]),               # read twice: stays
             helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("Add", ["c2", "c2"], ["z"])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y", "r2", "z"], inits)
    assert select.fused_away(m) == ({"c", "n"} if fused else {"c"})
    sample = H.samples_for(m, 1)[0]
    refs = H.ort_run(m, sample)
    scorer = select.Scorer(m, ["x", "c", "n", "y", "c2", "r2", "z"], [sample], [refs], runner.make_session)
    fine = {t: (-8.0, 8.0) for t in ["x", "c", "n", "y", "c2", "r2", "z"]}
    coarse = dict(fine, n=(-1000.0, 1000.0))          # only the BN output's range changes
    assert (scorer(coarse)[0] == scorer(fine)[0]) == fused


def test_the_scorer_skips_a_softmax_head_and_its_copies():
    nodes = [helper.make_node("Softmax", ["x"], ["p"]), helper.make_node("Identity", ["p"], ["y"]),
             helper.make_node("Softmax", ["x"], ["q"]), helper.make_node("Relu", ["q"], ["z"])]
    m = H.model(nodes, {"x": (2, 3)}, ["y", "z"])
    assert select.fused_away(m) == {"p", "y"}                  # q feeds compute: rounded as in int8
