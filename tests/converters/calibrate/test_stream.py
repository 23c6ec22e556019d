"""Streaming models: a recording without the state inputs, unrolled through the float model, then
calibrated, converted, run closed-loop in LiteRT and compared with onnxruntime."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from converters import tflite
from converters.calibrate import collect_ranges, stream
from converters.calibrate.data import input_specs
from converters.errors import CalibrationDataError
from converters.frontend import load_model
from converters.verify.metrics import sqnr_db
from core.errors import UsageError
from core.litert import make_interpreter
from edge.cli import main
from tests.converters import io_models

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    path = io_models.stateful(folder / "vad.onnx")
    np.savez(folder / "rec.npz", **io_models.recording(160))
    np.savez(folder / "held.npz", **io_models.recording(80, seed=5))
    return folder, path


def test_unroll_feeds_each_step_the_state_the_previous_step_made(vad):
    folder, path = vad
    model = load_model(path)
    rec = io_models.recording(12)
    steps = [{"x": rec["x"][i], "sr": np.asarray(rec["sr"][i])} for i in range(12)]
    samples = stream.unroll(model, steps, [("stateN", "state")])
    session = ort.InferenceSession(path, providers=CPU)          # the loop, written out by hand
    state = np.zeros((1, io_models.STATE), np.float32)
    np.testing.assert_array_equal(samples[0]["state"], state)
    for i, step in enumerate(steps):
        np.testing.assert_allclose(samples[i]["state"], state, rtol=1e-6, atol=1e-7)
        state = session.run(["stateN"], {**step, "state": state})[0]
    assert np.abs(samples[-1]["state"]).max() > 0.1                # the state did move


def test_unroll_limit_spreads_samples_over_the_sequence(vad):
    _, path = vad
    rec = io_models.recording(40)
    steps = [{"x": rec["x"][i], "sr": np.asarray(rec["sr"][i])} for i in range(40)]
    full = stream.unroll(load_model(path), steps, [("stateN", "state")])
    kept = stream.unroll(load_model(path), steps, [("stateN", "state")], limit=5)
    assert len(kept) == 5
    np.testing.assert_array_equal(kept[0]["x"], full[0]["x"])
    np.testing.assert_array_equal(kept[-1]["x"], full[-1]["x"])      # the end of the sequence too


def test_state_pairs_found_for_inputs_the_data_lacks(vad):
    _, path = vad
    model = load_model(path)
    specs = input_specs(model)
    assert stream.state_pairs(model, specs, {"x", "sr"}) == [("stateN", "state")]
    assert stream.state_pairs(model, specs, {"x", "sr", "state"}) == []        # the data holds it
    assert stream.state_pairs(model, specs, None) == []                        # a .npy: nothing guessed
    assert stream.state_pairs(model, specs, {"x", "sr"}, [("stateN", "state")]) == [("stateN", "state")]


@pytest.mark.parametrize("pair, fragment", [
    (("nope", "state"), "'nope' is not a graph output"),
    (("stateN", "nope"), "'nope' is not a graph input"),
    (("y", "state"), "output 'y' [1, 2] cannot feed input 'state' [1, 8]"),
])
def test_bad_state_pairs_are_usage_errors(vad, pair, fragment):
    _, path = vad
    model = load_model(path)
    with pytest.raises(UsageError, match="--state") as info:
        stream.state_pairs(model, input_specs(model), {"x", "sr"}, [pair])
    assert fragment in info.value.message


def test_two_equally_likely_states_ask_for_state_flag(tmp_path):
    nodes = [h.make_node("Identity", ["s"], ["p"]), h.make_node("Identity", ["s"], ["q"]),
             h.make_node("Identity", ["x"], ["z"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, [1, 2]) for n in ("x", "s")],
                         [h.make_tensor_value_info(n, T.FLOAT, [1, 2]) for n in ("p", "q", "z")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(CalibrationDataError, match="could all be its state") as info:
        stream.state_pairs(model, input_specs(model), {"x"})
    assert "--state" in info.value.hint
    assert stream.parse_state("p=s") == ("p", "s")
    with pytest.raises(UsageError):
        stream.parse_state("p")


def _closed_loop(run, rec: dict) -> np.ndarray:
    """y of every step, each step fed the state the model itself produced (as deployed)."""
    state, ys = np.zeros((1, io_models.STATE), np.float32), []
    for x, sr in zip(rec["x"], rec["sr"]):
        y, state = run(x, np.asarray(sr), state)
        ys.append(y)
    return np.concatenate(ys)


def test_streaming_model_converts_from_a_recording_and_tracks_the_float_model(vad, capsys):
    folder, path = vad
    out = folder / "vad.gpk"
    code = main(["convert", path, "--calib", str(folder / "rec.npz"), "--holdout", str(folder / "held.npz"),
                 "-o", str(out), "-q"])
    _, err = capsys.readouterr()
    assert code == 0, err
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert manifest["state"] == [{"output": "stateN", "input": "state"}]
    assert [i["name"] for i in manifest["inputs"]] == ["x", "state", "sr"]
    assert manifest["fidelity"]["tflite"]["outputs"]["y"]["sqnr_db"] > 25
    # closed loop in LiteRT against closed loop in onnxruntime over a sequence it never saw
    interp = make_interpreter(zipfile.ZipFile(out).read("model.tflite"))
    ins = {d["name"]: d["index"] for d in interp.get_input_details()}
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}

    def lite(x, sr, state):
        for name, value in (("x", x), ("sr", sr), ("state", state)):
            interp.set_tensor(ins[name], value)
        interp.invoke()
        return interp.get_tensor(outs["y"]), interp.get_tensor(outs["stateN"])

    session = ort.InferenceSession(path, providers=CPU)
    rec = io_models.recording(80, seed=5)                                  # held.npz
    ref = _closed_loop(lambda x, sr, s: session.run(["y", "stateN"], {"x": x, "sr": sr, "state": s}), rec)
    got = _closed_loop(lite, rec)
    assert sqnr_db(ref, got) > 25
    # verify reads the state pairs from the manifest (the recording needs no state array) and runs
    # the candidate closed-loop, as deployed: the same figure as the loop above
    code = main(["verify", str(out), "--reference", path, "--data", str(folder / "held.npz"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["samples"] == 80
    assert report["outputs"]["y"]["sqnr_db"] == pytest.approx(sqnr_db(ref, got), abs=0.01)
    assert any("closed-loop" in note for note in report["notes"])
    assert report["outputs"]["stateN"]["top1_agreement"] is None           # a state is no classifier
    assert any("stateN" in note for note in report["notes"])


def test_without_state_pairs_the_missing_input_is_named(vad, capsys):
    folder, path = vad
    np.savez(folder / "no_x.npz", sr=np.full(20, 16000, np.int64))
    code = main(["convert", path, "--calib", str(folder / "no_x.npz"), "-o", str(folder / "bad.gpk"), "-q"])
    _, err = capsys.readouterr()
    assert code != 0 and not (folder / "bad.gpk").exists()
    assert "['x']" in err and "the file has ['sr']" in err


def test_a_recording_calibrates_the_state_better_than_zero_states(vad, capsys):
    """Zero states (what a naive .npz holds) give the state tensors ranges they never have in use."""
    folder, path = vad
    rec = io_models.recording(160)
    np.savez(folder / "zeros.npz", **rec, state=np.zeros((160, 1, io_models.STATE), np.float32))
    sqnr = {}
    for name in ("rec", "zeros"):
        out = folder / f"{name}.gpk"
        assert main(["convert", path, "--calib", str(folder / f"{name}.npz"), "-o", str(out), "-q"]) == 0
        capsys.readouterr()
        assert main(["verify", str(out), "--reference", path, "--data", str(folder / "held.npz"),
                     "--state", "stateN=state", "--json"]) == 0
        sqnr[name] = json.loads(capsys.readouterr().out)["outputs"]["y"]["sqnr_db"]
    assert sqnr["rec"] > 30 and sqnr["rec"] > sqnr["zeros"] + 10


def _lstm_stream() -> onnx.ModelProto:
    """x -> MatMul -> LSTM(initial h, c = the state inputs) -> MatMul head; h_n, c_n are fed back."""
    rng = np.random.default_rng(3)
    hidden = 8
    inits = {"P": rng.normal(0, .5, (4, 6)), "W": rng.normal(0, .4, (1, 4 * hidden, 6)),
             "R": rng.normal(0, .4, (1, 4 * hidden, hidden)), "V": rng.normal(0, .5, (hidden, 2))}
    nodes = [h.make_node("MatMul", ["x", "P"], ["a"]),
             h.make_node("LSTM", ["a", "W", "R", "", "", "h0", "c0"], ["seq", "hN", "cN"], hidden_size=hidden),
             h.make_node("MatMul", ["hN", "V"], ["y"])]
    graph = h.make_graph(
        nodes, "lstm_stream",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 4]), h.make_tensor_value_info("h0", T.FLOAT, [1, 1, hidden]),
         h.make_tensor_value_info("c0", T.FLOAT, [1, 1, hidden])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 1, 2]), h.make_tensor_value_info("hN", T.FLOAT, [1, 1, hidden]),
         h.make_tensor_value_info("cN", T.FLOAT, [1, 1, hidden])],
        [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("int8_recurrent", [False, True])
def test_auto_rounds_no_recurrent_state_that_the_int8_model_keeps_float(int8_recurrent):
    """``auto``'s view of the int8 model (``tflite.int8_view``) leaves out the state path an LSTM
    kept float holds (the state inputs, the cell state): a rounded state, fed back call after call,
    charged every candidate with drift that LiteRT's model never has. h_n stays in: the int8 head
    reads a rounded copy. With ``--int8-recurrent`` the state is int8, and the view rounds it."""
    m = _lstm_stream()
    options = tflite.TFLiteOptions(int8_recurrent=int8_recurrent)
    view = tflite.int8_view(tflite.ir_graph(m, options), int8_recurrent=int8_recurrent)
    assert {"h0", "c0", "cN"}.isdisjoint(view.tensors) != int8_recurrent
    assert {"x", "a", "hN", "y"} <= view.tensors
    if int8_recurrent:
        return
    steps = [{"x": x[None], "h0": np.zeros((1, 1, 8), np.float32), "c0": np.zeros((1, 1, 8), np.float32)}
             for x in io_models.recording(12)["x"]]
    built = tflite.build(m, collect_ranges(m, steps, method="minmax", progress=False), options, samples=steps)
    details = make_interpreter(built.flatbuffer).get_tensor_details()
    dtypes = {name: details[entry["index"]]["dtype"] for name, entry in built.tensor_map.items()}
    assert all(dtypes[n] == np.float32 for n in ("h0", "c0", "hN", "cN")) and dtypes["a"] == np.int8


def test_a_recording_that_holds_the_float_states_is_found(vad):
    """A recording may carry the float model's own states (a zoo's calib.npz): the pair is found
    by running the float model over its first steps; zero states (restarts, or a naive .npz) and
    states of another model are not taken for it."""
    _, path = vad
    model = load_model(path)
    rec = io_models.recording(12)
    steps = stream.unroll(model, [{"x": rec["x"][i], "sr": np.asarray(rec["sr"][i])} for i in range(12)],
                          [("stateN", "state")])
    candidates = stream.candidate_pairs(model, input_specs(model))
    assert candidates == [("stateN", "state")]
    assert stream.recorded_pairs(model, steps, candidates) == [("stateN", "state")]
    restarted = steps[:4] + [dict(steps[4], state=np.zeros_like(steps[4]["state"]))] + steps[5:]
    assert stream.recorded_pairs(model, restarted, candidates) == [("stateN", "state")]
    zeros = [dict(s, state=np.zeros_like(s["state"])) for s in steps]
    assert stream.recorded_pairs(model, zeros, candidates) == []
    other = [dict(s, state=s["state"] * 0.5 + 0.1) for s in steps]
    assert stream.recorded_pairs(model, other, candidates) == []
    assert stream.recurrence(model, [("stateN", "state")]) == {"rec_proj", "sum", "tanh"}


@pytest.mark.parametrize("with_state", [False, True], ids=["recording", "recorded_states"])
def test_a_written_out_recurrence_stays_float_in_closed_loop(vad, capsys, with_state):
    """The recurrence ``tanh(x W + state U)`` written out as nodes (as silero VAD's op18 export
    writes its LSTM cell) stays float like an ONNX RNN, whether the recording leaves the state out
    or holds the float model's own states; ``--int8-recurrent`` rounds it. LiteRT closed loop
    against onnxruntime closed loop on a sequence neither saw (this cell forgets fast, so int8
    costs it ~2 dB; silero's op18 export lost 16.5 dB)."""
    folder, path = vad
    calib = folder / "rec.npz"
    if with_state:          # each step's state: the float model's previous stateN
        rec = io_models.recording(160)
        steps = stream.unroll(load_model(path), [{"x": rec["x"][i], "sr": np.asarray(rec["sr"][i])}
                                                 for i in range(160)], [("stateN", "state")])
        calib = folder / "rec_states.npz"
        np.savez(calib, **rec, state=np.stack([s["state"] for s in steps]))
    session = ort.InferenceSession(path, providers=CPU)
    held = io_models.recording(80, seed=5)
    ref = _closed_loop(lambda x, sr, s: session.run(["y", "stateN"], {"x": x, "sr": sr, "state": s}), held)
    sqnr, keep = {}, {}
    for flags in ((), ("--int8-recurrent",)):
        out = folder / f"loop{len(flags)}{with_state}.gpk"
        assert main(["convert", path, "--calib", str(calib), "-o", str(out), "-q", *flags]) == 0, capsys.readouterr()
        capsys.readouterr()
        keep[flags] = json.loads(zipfile.ZipFile(out).read("manifest.json"))["quantization"]["keep_float"]
        interp = make_interpreter(zipfile.ZipFile(out).read("model.tflite"))
        ins = {d["name"]: d["index"] for d in interp.get_input_details()}
        outs = {d["name"]: d["index"] for d in interp.get_output_details()}

        def lite(x, sr, state, interp=interp, ins=ins, outs=outs):
            for name, value in (("x", x), ("sr", sr), ("state", state)):
                if name in ins:
                    interp.set_tensor(ins[name], value)
            interp.invoke()
            return interp.get_tensor(outs["y"]), interp.get_tensor(outs["stateN"])
        sqnr[flags] = sqnr_db(ref, _closed_loop(lite, held))
    assert set(keep[()]) == {"rec_proj", "sum", "tanh"} and keep[("--int8-recurrent",)] == []
    assert sqnr[()] > 38.0 and sqnr[()] > sqnr[("--int8-recurrent",)] + 1.5, sqnr
