"""verify: metrics on known signals, and real LiteRT / onnxruntime runs of converted models."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from converters import qdq, tflite
from converters.calibrate import collect_ranges
from converters.errors import CalibrationDataError
from converters.verify import (Accumulator, VerifyReport, accuracy, compare_layers, load_labels, metrics,
                               verify)
from converters.verify.runners import OnnxRunner, VerifyInputError
from core import artifact
from core.errors import UsageError


# --- metrics on signals whose answer is known ---------------------------------------------------
def test_metrics_of_known_noise():
    ref = np.ones((10, 100), np.float32)
    m = metrics(ref, ref + np.float32(0.1))
    assert m["sqnr_db"] == pytest.approx(20.0, abs=1e-3)     # 10 log10(1 / 0.01)
    assert m["max_abs"] == pytest.approx(0.1, rel=1e-5) and m["mean_abs"] == pytest.approx(0.1, rel=1e-5)
    assert m["cosine"] == pytest.approx(1.0)
    same = metrics(ref, ref)
    assert same["sqnr_db"] == 200.0 and same["max_abs"] == 0.0
    assert metrics(np.array([1.0, -2.0]), np.array([-1.0, 2.0]))["cosine"] == pytest.approx(-1.0)


@pytest.mark.parametrize("reference, candidate, expected", [
    ([1.0, 2.0], [1.0, 2.0], 200.0),                  # identical outputs: no noise, the cap
    ([0.0, 0.0], [0.0, 0.0], 200.0),                  # identical zeros too
    ([0.0, 0.0], [0.0, 1e-3], -200.0),                # zero reference, some noise: the floor
    ([1.0, 1.0], [1.0, np.nan], -200.0),              # a NaN candidate is no signal at all
    ([1.0, 1.0], [1.0, np.inf], -200.0),
    ([np.inf, 1.0], [np.inf, 1.0], -200.0),           # inf - inf: no meaningful ratio either
    ([1.0, 1.0], [1.0, 1.0 + 1e-12], 200.0),          # 250 dB is clamped to the cap
    ([1e-12, 0.0], [1.0, 0.0], -200.0),               # -240 dB is clamped to the floor
    ([1.0, 1.0], [1.1, 0.9], 20.0),                   # 10 log10(2 / 0.02)
])
def test_sqnr_edge_cases_are_defined_once(reference, candidate, expected):
    from converters.verify.metrics import sqnr_db
    assert sqnr_db(np.array(reference), np.array(candidate)) == pytest.approx(expected, abs=1e-6)
    acc = Accumulator()                               # the streaming form agrees
    with np.errstate(invalid="ignore"):               # inf - inf: a verify run warns, as it should
        acc.add(np.array(reference), np.array(candidate))
    assert acc.sqnr_db == pytest.approx(expected, abs=1e-6)


def test_sqnr_reshapes_same_size_and_refuses_other_sizes():
    from converters.verify.metrics import sqnr_db
    ref = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    assert sqnr_db(ref, ref.reshape(6)) == 200.0
    with pytest.raises(VerifyInputError, match="shapes differ"):
        sqnr_db(ref, np.ones(5))


def test_benches_and_test_helpers_use_the_one_sqnr():
    import sys
    from pathlib import Path

    import importlib

    from tests.converters.ops import harness
    m = importlib.import_module("converters.verify.metrics")   # the package exports a function of that name
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import convert_bench
    import op_bench
    assert convert_bench.sqnr_db is m.sqnr_db and op_bench.sqnr_db is m.sqnr_db and harness.sqnr_db is m.sqnr_db


def test_top1_agreement_and_accuracy():
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    cand = np.array([[0.1, 0.8, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    assert metrics(ref, cand)["top1_agreement"] == 0.75
    assert metrics(np.ones((4, 1)), np.ones((4, 1)))["top1_agreement"] is None
    assert accuracy(list(cand[:, None, :]), np.array([1, 0, 2, 2])) == 0.75


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(20, 10)), rng.normal(size=(20, 10))
    acc = Accumulator()
    for r, c in zip(ref, cand):
        acc.add(r[None], c[None])
    whole = metrics(ref, cand)
    assert acc.result() == pytest.approx(whole)


# --- real conversions ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(digits_dir):
    from converters import frontend
    model = frontend.load_model(digits_dir / "digits_cnn.onnx")
    calib = np.load(digits_dir / "calib.npz")["input"]
    holdout = np.load(digits_dir / "holdout.npz")["input"][:200]
    labels = np.load(digits_dir / "holdout_labels.npy")[:200]
    ranges = collect_ranges(model, [{"input": x[None]} for x in calib[:100]], progress=False)
    return model, ranges, [{"input": x[None]} for x in holdout], labels


def build_tflite(model, ranges, **options):
    return tflite.build(model, ranges, tflite.TFLiteOptions(**options))


def test_int8_tflite_in_litert_against_float(digits):
    model, ranges, holdout, labels = digits
    result = build_tflite(model, ranges)
    report = verify(result.flatbuffer, model, holdout, labels=labels, progress=False)
    m = report.summary
    assert report.candidate == "tflite" and report.samples == 200
    assert 25.0 < m["sqnr_db"] < 200.0 and m["top1_agreement"] >= 0.97 and m["cosine"] > 0.99
    # the reference accuracy is the float model's own, computed independently here
    float_run = OnnxRunner(model)
    f_acc = np.mean([np.argmax(float_run.run(s)["logits"]) == y for s, y in zip(holdout, labels)])
    assert report.accuracy["reference"] == pytest.approx(f_acc)
    assert report.accuracy["candidate"] >= f_acc - 0.01


def test_float_tflite_is_near_exact(digits):
    model, _, holdout, _ = digits
    report = verify(build_tflite(model, None, quantize="none").flatbuffer, model, holdout[:20], progress=False)
    assert report.summary["sqnr_db"] > 80 and report.summary["top1_agreement"] == 1.0


@pytest.mark.parametrize("options", [{"io": "int8"}, {"io": "uint8"}, {"layout": "nhwc"}])
def test_integer_io_and_nhwc_layout_are_adapted(digits, options):
    model, ranges, holdout, _ = digits
    report = verify(build_tflite(model, ranges, **options).flatbuffer, model, holdout[:50], progress=False)
    assert report.summary["sqnr_db"] > 25.0, options


def test_qdq_onnx_and_gpk_artifact(digits, tmp_path):
    model, ranges, holdout, labels = digits
    q = qdq.build(model, ranges).SerializeToString()
    result = build_tflite(model, ranges)
    path = tmp_path / "digits.gpk"
    manifest = {"name": "digits", "models": [{"format": "tflite", "file": "model.tflite"},
                                             {"format": "onnx", "file": "model.qdq.onnx"}],
                "tensor_map": result.tensor_map}
    artifact.write(path, manifest, {"model.tflite": result.flatbuffer, "model.qdq.onnx": q})
    onnx_report = verify(path, model, holdout, fmt="onnx", labels=labels, progress=False)
    assert onnx_report.candidate == "onnx" and onnx_report.summary["sqnr_db"] > 25.0
    assert onnx_report.accuracy["candidate"] >= onnx_report.accuracy["reference"] - 0.01
    tfl_report = verify(path, model, holdout[:30], per_layer=True, progress=False)   # tensor_map from manifest
    assert tfl_report.candidate == "tflite" and tfl_report.per_layer
    (tmp_path / "m.onnx").write_bytes(q)
    assert verify(tmp_path / "m.onnx", model, holdout[:5], progress=False).candidate == "onnx"


def test_per_layer_points_at_the_broken_layer(digits):
    model, ranges, holdout, _ = digits
    broken = dict(ranges)
    # A calibration gone wrong at the second conv: heavy clipping. MaxPool and Flatten share
    # their input's int8 scale in TFLite, so the range of the whole chain is what gets used.
    for name in ("relu_1", "maxpool_1", "flatten_0"):
        broken[name] = (0.0, ranges["relu_1"][1] / 25.0)
    result = build_tflite(model, broken)
    rows = compare_layers(model, result.flatbuffer, result.tensor_map, holdout[:40])
    assert rows[0].tensor == "relu_1" and rows[0].op == "Conv+Relu"
    assert rows[0].own_sqnr_db < 5.0 and rows[0].drop_db > 30.0      # measured: 1.2 dB, 44 dB drop
    healthy = compare_layers(model, build_tflite(model, ranges).flatbuffer, result.tensor_map, holdout[:40])
    by_name = {r.tensor: r for r in healthy}
    assert by_name["relu_1"].sqnr_db > rows[0].sqnr_db + 10


@pytest.mark.parametrize("profile", sorted(qdq.PROFILES))
def test_per_layer_on_qdq_points_at_the_broken_layer(digits, profile):
    model, ranges, holdout, _ = digits
    broken = dict(ranges)
    # The QDQ model carries the TFLite build's parameters, where MaxPool and Flatten share their
    # input's scale (as in the TFLite test above): break the chain. The tensorrt profile quantizes
    # only the Gemm's input (flatten_0), the onnxruntime one the MaxPool's (relu_1) first.
    chain = ("relu_1", "maxpool_1", "flatten_0")
    for name in chain:
        broken[name] = (0.0, ranges["relu_1"][1] / 25.0)
    candidate = qdq.build(model, broken, profile=profile).SerializeToString()
    report = verify(candidate, model, holdout[:40], per_layer=True, progress=False)
    rows = report.per_layer
    first = "flatten_0" if profile == "tensorrt" else "relu_1"
    assert rows[0].tensor == first and rows[0].own_sqnr_db < 5.0, rows[:2]
    healthy = verify(qdq.build(model, ranges, profile=profile).SerializeToString(), model, holdout[:40],
                     per_layer=True, progress=False).per_layer
    assert {r.tensor for r in healthy} >= {"relu_0", "relu_1", "maxpool_1", "logits"}
    assert min(r.own_sqnr_db for r in healthy) > 25.0


def test_per_layer_reuses_the_frontends_shape_inference(digits, monkeypatch):
    """The reference comes typed from frontend.load_model, so per-layer verify of a TFLite
    candidate runs no ONNX shape inference at all; a QDQ candidate (its Q/DQ outputs untyped)
    runs it once. A spy counts calls into the real function; the reports must stay the same."""
    import onnx.shape_inference as si
    model, ranges, holdout, _ = digits
    t = build_tflite(model, ranges)
    q = qdq.build(model, ranges).SerializeToString()
    real, calls = si.infer_shapes, []
    monkeypatch.setattr(si, "infer_shapes", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = compare_layers(model, t.flatbuffer, t.tensor_map, holdout[:8])
    assert calls == [] and len(rows) >= 4
    report = verify(q, model, holdout[:8], per_layer=True, progress=False)
    assert calls == [1] and {r.tensor for r in report.per_layer} >= {"relu_0", "relu_1", "logits"}
    calls.clear()
    collect_ranges(model, holdout[:2], progress=False)          # calibration reuses them too
    assert calls == []


def test_untyped_models_are_still_inferred():
    """A hand-built model whose value_info is empty: types come from shape inference."""
    from onnx import TensorProto, helper

    from converters.calibrate.runner import expose, float_tensor_names, value_types
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g)
    assert value_types(m)["r"] == TensorProto.FLOAT
    assert float_tensor_names(m) == (["x"], ["r", "y"])
    assert [o.name for o in expose(m, ["r"]).graph.output] == ["r"]


def test_report_to_dict_and_render(digits):
    model, ranges, holdout, labels = digits
    result = build_tflite(model, ranges)
    report = verify(result.flatbuffer, model, holdout[:40], labels=labels[:40], per_layer=True,
                    tensor_map=result.tensor_map, progress=False)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["outputs"]["logits"]["sqnr_db"] == report.summary["sqnr_db"]
    assert len(data["per_layer"]) == len(report.per_layer) >= 3
    text = VerifyReport.from_dict(data).render()
    assert "SQNR dB" in text and "accuracy on 40 labels" in text and "own SQNR" in text
    assert report.per_layer[0].node in text


def test_verify_errors(digits, tmp_path):
    model, ranges, holdout, labels = digits
    flat = build_tflite(model, ranges).flatbuffer
    with pytest.raises(VerifyInputError, match="no samples"):
        verify(flat, model, [], progress=False)
    with pytest.raises(VerifyInputError, match="labels"):
        verify(flat, model, holdout[:10], labels=labels[:9], progress=False)
    with pytest.raises(UsageError, match="tensor_map"):
        verify(flat, model, holdout[:2], per_layer=True, progress=False)
    with pytest.raises(VerifyInputError, match="malformed"):
        compare_layers(model, flat, {"relu_1": {"index": "x"}}, holdout[:2])
    with pytest.raises(VerifyInputError, match="names no tensor"):
        compare_layers(model, flat, {"nope": {"index": 1}}, holdout[:2])
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    from converters.errors import ModelLoadError
    with pytest.raises(ModelLoadError):
        verify(flat, tmp_path / "bad.onnx", holdout[:2], progress=False)
    wrong = [{"input": np.zeros((1, 1, 9, 9), np.float32)}]
    with pytest.raises(VerifyInputError, match="shape"):
        verify(flat, onnx_with_input_shape(model, [1, 1, 9, 9]), wrong, progress=False)


def onnx_with_input_shape(model, dims):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for d, v in zip(copy.graph.input[0].type.tensor_type.shape.dim, dims):
        d.dim_value = v
    return copy


def test_load_labels(tmp_path):
    np.save(tmp_path / "y.npy", np.array([3, 1, 2]))
    (tmp_path / "y.txt").write_text("3\n1\n2\n")
    assert load_labels(tmp_path / "y.npy").tolist() == load_labels(tmp_path / "y.txt").tolist() == [3, 1, 2]
    np.save(tmp_path / "f.npy", np.array([0.5]))
    np.save(tmp_path / "o.npy", np.array([{}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.txt").write_text("cat\n")
    for name in ("f.npy", "o.npy", "bad.txt"):
        with pytest.raises(CalibrationDataError):
            load_labels(tmp_path / name)


def test_top1_of_a_segmentation_map_is_per_pixel_over_channels():
    ref = np.zeros((1, 3, 2, 2))
    ref[0, 2] = 1.0                                  # every pixel is class 2
    cand = ref.copy()
    cand[0, 0, 0, 0] = 5.0                           # one pixel of four flips to class 0
    assert metrics(ref, cand)["top1_agreement"] == 0.75


def test_signed_artifact_checked_against_trusted_keys(digits, tmp_path):
    from core import keys
    from core.errors import ArtifactError
    model, ranges, holdout, _ = digits
    flat = build_tflite(model, ranges).flatbuffer
    keys.generate(tmp_path / "a.key", tmp_path / "a.pub")
    keys.generate(tmp_path / "b.key", tmp_path / "b.pub")
    manifest = {"name": "d", "models": [{"format": "tflite", "file": "model.tflite"}]}
    artifact.write(tmp_path / "s.gpk", manifest, {"model.tflite": flat}, keys.load_private(tmp_path / "a.key"))
    good = verify(tmp_path / "s.gpk", model, holdout[:5], trusted_keys=[keys.load_public(tmp_path / "a.pub")],
                  progress=False)
    assert good.summary["sqnr_db"] > 25.0
    with pytest.raises(ArtifactError):
        verify(tmp_path / "s.gpk", model, holdout[:5], trusted_keys=[keys.load_public(tmp_path / "b.pub")],
               progress=False)


def test_trusted_keys_refuse_unsigned_candidates_and_name_the_file(digits, tmp_path):
    """A trusted key means nothing unsigned is trusted, as for `ganglion run` (issue 9 item 1)."""
    from core.errors import GanglionError
    from core import keys
    model, ranges, holdout, _ = digits
    flat = build_tflite(model, ranges).flatbuffer
    keys.generate(tmp_path / "a.key", tmp_path / "a.pub")
    trusted = [keys.load_public(tmp_path / "a.pub")]
    (tmp_path / "bare.tflite").write_bytes(flat)
    artifact.write(tmp_path / "unsigned.gpk", {"name": "d", "models": [{"format": "tflite", "file": "model.tflite"}]},
                   {"model.tflite": flat})
    for path, code in ((tmp_path / "bare.tflite", "artifact.unsigned"), (tmp_path / "unsigned.gpk", "artifact.signature_missing")):
        with pytest.raises(GanglionError) as info:
            verify(path, model, holdout[:2], trusted_keys=trusted, progress=False)
        assert info.value.code == code and path.name in str(info.value.where)
    assert verify(tmp_path / "bare.tflite", model, holdout[:2], progress=False).samples == 2   # no keys: runs
    (tmp_path / "bad.gpk").write_bytes(b"PK" + b"\0" * 40)
    with pytest.raises(Exception) as bad:
        verify(tmp_path / "bad.gpk", model, holdout[:2], progress=False)
    assert "bad.gpk" in str(getattr(bad.value, "where", "")), "errors name the file, not <bytes>"


def test_per_layer_table_says_exact_for_the_input_layer(digits):
    model, ranges, holdout, _ = digits
    result = build_tflite(model, ranges)
    report = verify(result.flatbuffer, model, holdout[:10], per_layer=True, tensor_map=result.tensor_map,
                    progress=False)
    first = [r for r in report.per_layer if r.input_sqnr_db >= 200.0]
    assert first, "the first layer reads the exact graph input"
    text = report.render(top=len(report.per_layer))
    row = next(line for line in text.splitlines() if f" {first[0].node} " in f" {line} ")
    assert "exact" in row and "+1" not in row.split(first[0].op, 1)[1].split()[2]
