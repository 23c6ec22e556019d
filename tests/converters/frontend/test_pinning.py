"""Dynamic input dims pinned without --input-shape: a dim_param shared by several inputs takes one
size, a state input's unnamed dim is read off the output fed back into it, and calibration data
that fixes a dim pins it (said on stderr, recorded in the manifest). silero VAD needs all three."""
from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
from onnx import TensorProto, helper

import converters.cli  # noqa: F401  (installs the one-line warning format)
from converters import frontend
from converters.calibrate.data import input_specs, shapes_from_data
from converters.errors import ShapeError
from converters.frontend.load import read_model
from converters.frontend.shapes import PinnedShapeWarning, static_shape
from edge.cli import main
from tests.converters import io_models


def _inputs(model) -> dict:
    return {vi.name: static_shape(vi) for vi in model.graph.input}


@pytest.mark.parametrize("state", ["named", "fed", "summed"])
def test_state_dims_follow_the_pinned_input(tmp_path, state):
    path = io_models.stateful_dynamic(tmp_path / "m.onnx", state)
    if state == "named":
        pinned = frontend.load_model(path, {"x": [1, 4]})
    else:               # the unnamed dim is a choice: it is said
        with pytest.warns(PinnedShapeWarning, match="'state' is pinned to \\[2, 1, 8\\]"):
            pinned = frontend.load_model(path, {"x": [1, 4]})
    assert _inputs(pinned) == {"x": (1, 4), "state": (2, 1, 8)}


def test_a_shared_dim_pinned_twice_differently_is_refused(tmp_path):
    path = io_models.stateful_dynamic(tmp_path / "m.onnx", "named")
    with pytest.raises(ShapeError, match="'batch' is pinned to both 1 and 3") as err:
        frontend.load_model(path, {"x": [1, 4], "state": [2, 3, 8]})
    assert "agree" in err.value.hint


def test_an_unnamed_dim_without_an_output_to_follow_still_asks_for_the_shape():
    nodes = [helper.make_node("ReduceSum", ["s", "ax"], ["y"], keepdims=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, None, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                          [helper.make_tensor(name="ax", data_type=TensorProto.INT64, dims=[2], vals=[1, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ShapeError, match="input 's' has a dynamic dimension at axis 1") as err:
        frontend.prepare(m)
    assert "--input-shape s=2,N,8" in err.value.hint


@pytest.mark.parametrize("stored, expected", [((16, 1, 4), (1, 4)),      # a stack of [1, 4] samples
                                              ((16, 4), (1, 4)),         # batch-1 samples, unbatched
                                              ((16, 1, 5, 2), None),     # another rank: left to loading
                                              ((16, 2, 4), (2, 4))])     # what the data says
def test_shapes_from_data(tmp_path, stored, expected):
    path = io_models.stateful_dynamic(tmp_path / "m.onnx", "named")
    np.savez(tmp_path / "d.npz", x=np.zeros(stored, np.float32))
    specs = input_specs(read_model(path))
    found = shapes_from_data(tmp_path / "d.npz", specs)
    assert found == ({} if expected is None else {"x": expected})
    assert shapes_from_data(tmp_path / "d.npz", specs, {"x": [1, 4]}) == {}     # --input-shape wins


@pytest.mark.parametrize("state", ["named", "fed"])
def test_a_recording_alone_converts_a_dynamic_streaming_model(tmp_path, capsys, state):
    path = io_models.stateful_dynamic(tmp_path / "vad.onnx", state)
    rec = io_models.recording(64)
    np.savez(tmp_path / "rec.npz", x=rec["x"])                  # [64, 1, 4]: no state, no shapes
    out = tmp_path / "vad.gpk"
    with pytest.warns(PinnedShapeWarning, match="pinned from the calibration data: --input-shape x=1,4"):
        code = main(["convert", path, "--calib", str(tmp_path / "rec.npz"), "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert manifest["input_shapes_from_data"] == {"x": [1, 4]}
    assert {i["name"]: i["shape"] for i in manifest["inputs"]} == {"x": [1, 4], "state": [2, 1, 8]}
    assert main(["inspect", str(out)]) == 0
    assert "input_shapes_from_data: x=[1, 4]" in capsys.readouterr().out
    code = main(["verify", str(out), "--reference", path, "--data", str(tmp_path / "rec.npz"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["outputs"]["y"]["sqnr_db"] > 25, report
    assert "top-1 n/a for stateN: a recurrent state (fed back as 'state'), not class scores" in report["notes"]


def test_a_placeholder_dim_param_is_not_one_shared_dimension():
    """paddle2onnx writes '?' for every dynamic dim (PP-OCR's x [?, 3, ?, ?]): not one size."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?", 3, "?", "?"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert _inputs(frontend.prepare(m, {"x": [1, 3, 48, 192]})) == {"x": (1, 3, 48, 192)}
    with pytest.raises(ShapeError, match="input 'x' has a dynamic dimension at axis 2"):
        frontend.prepare(m)


def test_the_cli_prints_a_converter_warning_as_one_line():
    text = warnings.formatwarning("input 'state' is pinned to [2, 1, 8]", PinnedShapeWarning, "/x/shapes.py", 9, "code")
    assert text == "warning: input 'state' is pinned to [2, 1, 8]\n"
    assert "/x/a.py:9: UserWarning" in warnings.formatwarning("other", UserWarning, "/x/a.py", 9, "code")


def test_a_token_input_is_not_taken_for_a_state():
    """ids [1, ?] beside logits [1, ?]: the unknown is a length, not a batch; it is asked for."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None]),
                           helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ShapeError, match="input 'x' has a dynamic dimension at axis 1"):
        frontend.prepare(m)
