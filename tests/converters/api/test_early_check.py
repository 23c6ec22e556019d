"""`ganglion convert` checks that every node can be lowered right after loading, before
calibration (the slow step): one error listing every problem, exit code 3, nothing written."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import api
from edge.cli import main


def _model(path):
    inits = [numpy_helper.from_array(np.ones((4, 8), np.float32), "w"),
             numpy_helper.from_array(np.array([0], np.int64), "s"),
             numpy_helper.from_array(np.array([2], np.int64), "e"),
             numpy_helper.from_array(np.array([1], np.int64), "a")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="head"),
             helper.make_node("Mystery", ["h"], ["m"], domain="vendor.ops", name="mystery"),
             helper.make_node("Slice", ["m", "s", "e", "a"], ["y"], name="cut"),
             helper.make_node("NonZero", ["h"], ["z"], name="filter")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
                           helper.make_tensor_value_info("z", TensorProto.INT64, [2, "k"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("vendor.ops", 1)])
    m.ir_version = 8
    onnx.save(m, path)


def test_unsupported_ops_fail_before_calibration(capsys, tmp_path, monkeypatch):
    _model(tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", np.ones((4, 1, 4), np.float32))
    monkeypatch.setattr(api, "calibrate", lambda *a, **k: pytest.fail("calibration ran before the check"))
    out = tmp_path / "m.gpk"
    code = main(["convert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npy"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err
    for name in ("Mystery 'mystery'", "Slice 'cut': no static shape for m", "NonZero 'filter'"):
        assert name in err
    assert "error[convert.data_dependent]" in err and not out.exists()


@pytest.mark.parametrize("target", ["tflite", "both", "qdq"])
def test_the_checked_ir_is_lowered_not_built_again(tmp_path, digits_dir, monkeypatch, target):
    """api.convert builds the IR once (check, then lower; a QDQ-only conversion's parameter
    source too): same bytes as a build from scratch."""
    from converters import tflite
    from converters.config import ConvertConfig
    built = []
    real = tflite.ir_graph
    monkeypatch.setattr(tflite, "ir_graph", lambda *a: built.append(1) or real(*a))
    cfg = ConvertConfig(model=digits_dir / "digits_cnn.onnx", output=tmp_path / "d.gpk", target=target,
                        calib=digits_dir / "calib.npz", num_calib=16, progress=False)
    result = api.convert(cfg)
    assert len(built) == 1
    model = api.load_model(cfg.model)
    stats, calib = api.calibrate_stats(model, cfg)
    fresh, _ = api.build_models(model, stats.ranges, calib, cfg, frozenset(), stats=stats)
    # from scratch: calibrate builds one for auto's int8 view, the (written or QDQ-source) build another
    assert len(built) == 3
    for fmt, (data, _) in fresh.items():
        assert result.files[api.manifest_mod.MODEL_ENTRIES[fmt][1]] == data, fmt


def test_an_ir_built_for_other_options_is_not_reused(digits_dir):
    from converters import tflite
    model = api.load_model(digits_dir / "digits_cnn.onnx")
    nhwc = tflite.TFLiteOptions(quantize="none", layout="nhwc")
    other = tflite.ir_graph(model, tflite.TFLiteOptions(quantize="none"))
    got = tflite.build(model, None, nhwc, graph=other)
    assert got.flatbuffer == tflite.build(model, None, nhwc).flatbuffer
    assert got.inputs[0].layout == "nhwc"
