"""ConvertConfig: defaults, derived values, and every clash reported as one UsageError (pure logic)."""
from __future__ import annotations

from pathlib import Path

import pytest

from converters.config import ConvertConfig, parse_shape
from core.errors import UsageError


def cfg(**kw) -> ConvertConfig:
    base = {"model": Path("m.onnx"), "output": Path("m.gpk"), "calib": Path("c.npz")}
    base.update(kw)
    return ConvertConfig(**base)


def test_defaults_are_int8_tflite_with_onnx_signature():
    c = cfg()
    assert (c.target, c.quantize, c.io, c.layout, c.observer) == ("tflite", "int8", "float32", "onnx", "auto")
    assert c.formats == ("tflite",)
    assert c.output_kind == "gpk"
    assert c.artifact_name == "m"
    assert c.needs_calibration


@pytest.mark.parametrize("output, target", [("x.tflite", "tflite"), ("x.onnx", "qdq"), ("x.gpk", "tflite")])
def test_target_follows_the_output_suffix(output, target):
    assert cfg(output=Path(output)).target == target


def test_qdq_profile_defaults_to_tensorrt_and_may_be_chosen_for_qdq_targets():
    assert cfg(target="both").qdq_flavour == "tensorrt"
    assert cfg(output=Path("q.onnx"), qdq_profile="onnxruntime").qdq_flavour == "onnxruntime"


def test_both_builds_two_formats():
    assert cfg(target="both").formats == ("tflite", "qdq")


def test_float_modes_need_no_calibration():
    for mode in ("none", "float16", "dynamic"):
        assert not cfg(quantize=mode, calib=None).needs_calibration


@pytest.mark.parametrize("kw, fragment", [
    ({"calib": None}, "calibration data"),
    ({"target": "fast"}, "--target"),
    ({"quantize": "int4"}, "--quantize"),
    ({"io": "int16"}, "--io"),
    ({"layout": "nchw"}, "--layout"),
    ({"observer": "median"}, "--observer"),
    ({"output": Path("m.tflite"), "target": "both"}, "bare tflite"),
    ({"output": Path("m.onnx"), "target": "tflite"}, "bare onnx"),
    ({"quantize": "dynamic", "target": "qdq"}, "int8 format"),
    ({"target": "qdq", "io": "int8"}, "QDQ ONNX keeps the ONNX signature"),
    ({"output": Path("m.onnx"), "layout": "nhwc"}, "QDQ ONNX keeps the ONNX signature"),
    ({"quantize": "none", "io": "uint8"}, "needs an int8 model"),
    ({"num_calib": 0}, "--num-calib"),
    ({"auto_keep_float": -1}, "--auto-keep-float"),
    ({"quantize": "none", "auto_keep_float": 2}, "needs --quantize int8"),
    ({"holdout_labels": Path("y.npy")}, "--holdout-labels needs --holdout"),
    ({"float_head": -1}, "--float-head"),
    ({"quantize": "float16", "float_head": 2}, "needs --quantize int8"),
    ({"output": Path("m.tflite"), "key": Path("k")}, "cannot carry a signature"),
    ({"output": Path("m.onnx"), "model": Path("m.onnx")}, "overwrite the input"),
    ({"qdq_profile": "onnxruntime"}, "--target tflite writes none"),
    ({"target": "both", "qdq_profile": "fast"}, "--qdq-profile"),
])
def test_each_clash_is_a_usage_error(kw, fragment):
    with pytest.raises(UsageError) as err:
        cfg(**kw)
    assert fragment in err.value.message
    assert err.value.exit_code == 2
    assert err.value.hint


def test_all_clashes_are_reported_at_once():
    with pytest.raises(UsageError) as err:
        cfg(quantize="none", io="int8", target="qdq")
    assert "--io int8" in err.value.message and "int8 format" in err.value.message


def test_config_is_frozen_and_normalises_types():
    c = cfg(model="a/b.onnx", keep_float=["n1", "n2"])
    assert isinstance(c.model, Path) and c.keep_float == frozenset({"n1", "n2"})
    with pytest.raises(AttributeError):
        c.quantize = "none"


@pytest.mark.parametrize("text, expected", [
    ("input=1,3,224,224", ("input", (1, 3, 224, 224))),
    ("input:1x3x8x8", ("input", (1, 3, 8, 8))),
    ("a:b=2,3", ("a:b", (2, 3))),
])
def test_parse_shape(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize("text", ["input", "=1,2", "input=1,,2", "input=1,N,8", "input=0,3", "input=-1,3"])
def test_parse_shape_rejects(text):
    with pytest.raises(UsageError):
        parse_shape(text)


def test_shape_overrides_as_dict():
    c = cfg(input_shapes=(("input", (1, 3, 32, 32)),))
    assert c.shape_overrides == {"input": [1, 3, 32, 32]}


def test_config_choices_match_the_owning_packages():
    """config.py keeps its own lists (so `--help` needs no onnx import); they must not drift."""
    from converters import config, tflite
    from converters.calibrate import observers
    assert set(config.OBSERVERS) == set(observers.OBSERVERS)
    assert set(config.QUANTIZE) == set(tflite.QUANTIZE_MODES)
    assert set(config.IO_TYPES) == set(tflite.IO_TYPES)
    assert set(config.LAYOUTS) == set(tflite.LAYOUTS)
