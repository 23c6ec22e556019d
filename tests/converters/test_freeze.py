"""--input-value: freezing an input to a constant, recorded in the manifest, honoured by verify."""
from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from converters.freeze import FrozenInputWarning, freeze_inputs, parse_value
from core.errors import UsageError
from core.litert import make_interpreter
from edge.cli import main
from tests.converters import io_models


@pytest.mark.parametrize("text, expected", [
    ("sr=16000", ("sr", (16000,))), ("gain=0.5,1.5", ("gain", (0.5, 1.5))), ("flag=true", ("flag", (1,))),
    ("a=b=2", ("a=b", (2,))),
])
def test_parse_value(text, expected):
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["sr", "sr=", "=3", "sr=fast", "sr=1,,2"])
def test_parse_value_refuses_what_it_cannot_read(text):
    with pytest.raises(UsageError, match="cannot read input value"):
        parse_value(text)


def _dynamic(tmp_path) -> onnx.ModelProto:
    graph = h.make_graph([h.make_node("Mul", ["x", "k"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3]),
                          h.make_tensor_value_info("k", T.INT32, [2]),
                          h.make_tensor_value_info("m", T.FLOAT, ["N", 3])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_freeze_collects_every_problem_at_once(tmp_path):
    with pytest.raises(UsageError) as info:
        freeze_inputs(_dynamic(tmp_path), {"nope": (1,), "m": (1,), "k": (1, 2, 3)})
    message = info.value.message
    assert "'nope' is not a model input" in message
    assert "'m' has a dynamic shape" in message and "--input-shape m=" in message
    assert "'k' holds 2 value(s) [2], got 3" in message
    with pytest.raises(UsageError, match="non-integer"):
        freeze_inputs(_dynamic(tmp_path), {"k": (1.5,)})


def test_freeze_makes_an_initializer_of_the_input_dtype_and_shape(tmp_path):
    frozen = freeze_inputs(_dynamic(tmp_path), {"k": (7,), "m": (0.5,)}, shapes={"m": [2, 3]})
    assert [vi.name for vi in frozen.graph.input] == ["x"]
    values = {i.name: onnx.numpy_helper.to_array(i) for i in frozen.graph.initializer}
    assert values["k"].dtype == np.int32 and values["k"].tolist() == [7, 7]
    assert values["m"].shape == (2, 3) and values["m"].dtype == np.float32


def test_frozen_sample_rate_converts_and_verifies_against_the_original(tmp_path, capsys):
    path = io_models.stateful(tmp_path / "vad.onnx")
    rec = io_models.recording(40)
    np.savez(tmp_path / "rec.npz", x=rec["x"])                  # no sr: it is frozen; no state: fed back
    out = tmp_path / "vad.gpk"
    code = main(["convert", path, "--calib", str(tmp_path / "rec.npz"), "--input-value", "sr=8000",
                 "--state", "stateN=state", "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert manifest["frozen_inputs"] == {"sr": 8000}
    assert [i["name"] for i in manifest["inputs"]] == ["x", "state"]
    interp = make_interpreter(zipfile.ZipFile(out).read("model.tflite"))
    assert sorted(d["name"] for d in interp.get_input_details()) == ["state", "x"]
    # the artifact at sr=8000 computes what the original computes when fed sr=8000
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ins = {d["name"]: d["index"] for d in interp.get_input_details()}
    (y_out,) = [d["index"] for d in interp.get_output_details() if d["name"] == "y"]
    state = np.full((1, io_models.STATE), 0.3, np.float32)
    interp.set_tensor(ins["x"], rec["x"][3])
    interp.set_tensor(ins["state"], state)
    interp.invoke()
    ref = session.run(["y"], {"x": rec["x"][3], "state": state, "sr": np.array(8000, np.int64)})[0]
    np.testing.assert_allclose(interp.get_tensor(y_out), ref, atol=0.08)
    # verify freezes the reference from the manifest; a different --input-value is a different model
    code = main(["verify", str(out), "--reference", path, "--data", str(tmp_path / "rec.npz"), "--json"])
    good = json.loads(capsys.readouterr().out)
    code2 = main(["verify", str(out), "--reference", path, "--data", str(tmp_path / "rec.npz"), "--json",
                  "--input-value", "sr=16000"])
    other = json.loads(capsys.readouterr().out)
    assert code == code2 == 0
    assert good["outputs"]["y"]["sqnr_db"] > 25 > other["outputs"]["y"]["sqnr_db"]


def test_input_value_and_state_on_one_input_clash(tmp_path, capsys):
    path = io_models.stateful(tmp_path / "vad.onnx")
    np.savez(tmp_path / "rec.npz", **io_models.recording(20))
    code = main(["convert", path, "--calib", str(tmp_path / "rec.npz"), "--input-value", "state=0",
                 "--state", "stateN=state", "-o", str(tmp_path / "x.gpk")])
    assert code == 2 and "both frozen" in capsys.readouterr().err


def _if_on_sample_rate(path) -> str:
    """y = If(sr == 16000, x * 2, x * 3): the sample rate only picks a branch (as in a VAD)."""
    def branch(name, k):
        return h.make_graph([h.make_node("Mul", ["x", f"k{name}"], [f"y{name}"])], name, [],
                            [h.make_tensor_value_info(f"y{name}", T.FLOAT, [1, 4])],
                            [onnx.numpy_helper.from_array(np.float32(k), f"k{name}")])
    nodes = [h.make_node("Equal", ["sr", "rate"], ["is16k"]),
             h.make_node("If", ["is16k"], ["y"], then_branch=branch("then", 2.0), else_branch=branch("else", 3.0))]
    graph = h.make_graph(nodes, "vad_if", [h.make_tensor_value_info("x", T.FLOAT, [1, 4]),
                                           h.make_tensor_value_info("sr", T.INT64, [])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
                         [onnx.numpy_helper.from_array(np.array(16000, np.int64), "rate")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("rate, expected", [(16000, True), (8000, False)])
def test_a_frozen_sample_rate_makes_the_if_condition_a_constant(tmp_path, rate, expected):
    from converters import api
    from converters.frontend import to_graph
    path = _if_on_sample_rate(tmp_path / "vad_if.onnx")
    graph = to_graph(api.load_model(path, values={"sr": (rate,)}))
    conds = [graph.const(n.inputs[0]) for n in graph.nodes if n.op == "If"]
    # folded to one branch already (the shapes pass), or an If whose condition is now a constant
    assert not conds or (conds[0] is not None and bool(conds[0]) is expected)
    unfrozen = to_graph(api.load_model(path))
    assert any(n.op == "If" and unfrozen.const(n.inputs[0]) is None for n in unfrozen.nodes)


def test_frozen_input_is_gone_from_the_qdq_model_too(tmp_path, capsys):
    path = io_models.stateful(tmp_path / "vad.onnx")
    rec = io_models.recording(40)
    np.savez(tmp_path / "rec.npz", x=rec["x"])
    out = tmp_path / "vad.q.onnx"
    assert main(["convert", path, "--calib", str(tmp_path / "rec.npz"), "--input-value", "sr=8000",
                 "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    qdq = onnx.load(str(out))
    assert [vi.name for vi in qdq.graph.input] == ["x", "state"]
    feeds = {"x": rec["x"][5], "state": np.full((1, io_models.STATE), -0.2, np.float32)}
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["y"], feeds)[0]
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        ["y"], {**feeds, "sr": np.array(8000, np.int64)})[0]
    np.testing.assert_allclose(got, ref, atol=0.08)


@pytest.mark.parametrize("rates, frozen", [((8000,) * 16, 8000), ((8000, 16000) * 8, None)])
def test_a_control_input_constant_in_the_calibration_data_is_frozen_with_a_warning(tmp_path, capsys, rates, frozen):
    path = _if_on_sample_rate(tmp_path / "vad_if.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(16, 1, 4)).astype(np.float32),
             sr=np.array(rates, np.int64))
    out = tmp_path / "vad.gpk"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["convert", path, "--calib", str(tmp_path / "calib.npz"), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    found = [str(w.message) for w in caught if issubclass(w.category, FrozenInputWarning)]
    if frozen is None:                 # two sample rates in the data: the If stays, refused (exit 3)
        assert code == 3 and "If" in err and "--input-value sr=" in err and not found and not out.exists()
        return
    assert code == 0, err
    assert len(found) == 1 and "sr=8000" in found[0]
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert manifest["frozen_inputs"] == {"sr": 8000} and manifest["frozen_inputs_found"] == ["sr"]
    interp = make_interpreter(zipfile.ZipFile(out).read("model.tflite"))
    (inp,), (outp,) = interp.get_input_details(), interp.get_output_details()
    x = rng.normal(size=(1, 4)).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(outp["index"]), x * 3, atol=0.05)   # the else branch
    # verify freezes the original from the manifest
    assert main(["verify", str(out), "--reference", path, "--data", str(tmp_path / "calib.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["y"]["sqnr_db"] > 30
    # a bare .tflite records nothing: verify freezes the input it lacks from the data's one value
    (tmp_path / "vad.tflite").write_bytes(zipfile.ZipFile(out).read("model.tflite"))
    assert main(["verify", str(tmp_path / "vad.tflite"), "--reference", path, "--data", str(tmp_path / "calib.npz"),
                 "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["y"]["sqnr_db"] > 30, report
