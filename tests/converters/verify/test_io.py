"""verify: top-1 only over a real class axis (read from the graph, or --class-axis), and a dynamic
reference pinned to the shapes the artifact was converted with (no hand-pinned copy)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.verify.classes import output_axes
from converters.verify.metrics import VerifyInputError
from edge.cli import main as _main

RNG = np.random.default_rng(0)


def main(argv):
    return _main([str(a) for a in argv])


def _const(name, *shape):
    return nh.from_array(RNG.normal(0, 0.5, shape).astype(np.float32), name)


def _heads() -> onnx.ModelProto:
    """x [1, 6, 4] -> a softmax classifier, plain logits, a detector-style Concat, a Sigmoid, a
    segmentation-style Conv map and a one-class logit."""
    nodes = [h.make_node("MatMul", ["x", "W"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             h.make_node("MatMul", ["x", "B"], ["boxes"]),
             h.make_node("Sigmoid", ["logits"], ["scores"]),
             h.make_node("Concat", ["boxes", "scores"], ["det"], axis=-1),
             h.make_node("Unsqueeze", ["x", "ax"], ["x4"]),
             h.make_node("Conv", ["x4", "K"], ["seg"]),
             h.make_node("MatMul", ["x", "O"], ["one"])]
    outs = {"probs": [1, 6, 3], "logits": [1, 6, 3], "det": [1, 6, 7], "scores": [1, 6, 3],
            "seg": [1, 2, 6, 4], "one": [1, 6, 1]}
    graph = h.make_graph(nodes, "heads", [h.make_tensor_value_info("x", T.FLOAT, [1, 6, 4])],
                         [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outs.items()],
                         [_const("W", 4, 3), _const("B", 4, 4), _const("K", 2, 1, 1, 1), _const("O", 4, 1),
                          nh.from_array(np.array([1], np.int64), "ax")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_class_axes_are_read_from_the_graph():
    axes = output_axes(_heads())
    assert axes["probs"] == (2, "Softmax over axis -1")
    assert axes["logits"][0] == 2
    assert axes["seg"][0] == 1                                   # per-pixel classes
    assert axes["det"][0] is None and "Concat" in axes["det"][1]
    assert axes["scores"][0] is None and "Sigmoid" in axes["scores"][1]
    assert axes["one"][0] is None and "one element" in axes["one"][1]


def test_class_axis_overrides():
    axes = output_axes(_heads(), {"det": -1, "probs": None})
    assert axes["det"] == (2, "--class-axis") and axes["probs"][0] is None
    assert output_axes(_heads(), {"*": 1})["scores"] == (1, "--class-axis")
    with pytest.raises(VerifyInputError, match="unknown output"):
        output_axes(_heads(), {"nope": 1})
    with pytest.raises(VerifyInputError, match="out of range"):
        output_axes(_heads(), {"det": 3})


def _dynamic_classifier(path) -> str:
    """x [1, 3, H, W] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    nodes = [h.make_node("Conv", ["x", "K", "kb"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["g"]), h.make_node("Flatten", ["g"], ["f"]),
             h.make_node("Gemm", ["f", "W", "b"], ["logits"], transB=1),
             h.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = h.make_graph(nodes, "dyn", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, "H", "W"])],
                         [h.make_tensor_value_info("probs", T.FLOAT, [1, 5])],
                         [_const("K", 8, 3, 3, 3), _const("kb", 8), _const("W", 5, 8), _const("b", 5)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("output, flags", [
    ("m.gpk", []), ("m.gpk", ["--layout", "nhwc"]), ("m.tflite", []), ("m.tflite", ["--layout", "nhwc"]),
    ("m.onnx", []), ("m.gpk", ["--target", "both"]),
])
def test_verify_pins_a_dynamic_reference_like_the_artifact(tmp_path, capsys, output, flags):
    ref = _dynamic_classifier(tmp_path / "dyn.onnx")
    np.savez(tmp_path / "calib.npz", x=RNG.normal(size=(16, 1, 3, 8, 10)).astype(np.float32))
    code = main(["convert", ref, "--calib", tmp_path / "calib.npz", "--input-shape", "x=1,3,8,10",
                 "-o", tmp_path / output, "-q", *flags])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["verify", tmp_path / output, "--reference", ref, "--data", tmp_path / "calib.npz", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["outputs"]["probs"]["sqnr_db"] > 25 and report["outputs"]["probs"]["class_axis"] == 1
    # an explicit --input-shape wins: a shape the artifact does not take is the candidate's error
    code = main(["verify", tmp_path / output, "--reference", ref, "--data", tmp_path / "calib.npz",
                 "--input-shape", "x=1,3,8,12"])
    assert code != 0


def test_labels_need_an_output_with_classes(tmp_path, capsys):
    path = tmp_path / "heads.onnx"
    model = _heads()
    del model.graph.output[:2]                                    # keep det, scores, seg, one
    del model.graph.output[-2:]
    model.ir_version = 8
    onnx.save(model, str(path))
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(10, 1, 6, 4)).astype(np.float32))
    assert main(["convert", path, "--quantize", "none", "-o", tmp_path / "h.tflite", "-q"]) == 0
    np.save(tmp_path / "labels.npy", np.zeros(10, np.int64))
    capsys.readouterr()
    code = main(["verify", tmp_path / "h.tflite", "--reference", path, "--data", tmp_path / "d.npz",
                 "--labels", tmp_path / "labels.npy"])
    err = capsys.readouterr().err
    assert code != 0 and "no output holds class scores" in err and "--class-axis" in err
    code = main(["verify", tmp_path / "h.tflite", "--reference", path, "--data", tmp_path / "d.npz",
                 "--class-axis", "scores=-1"])
    text = capsys.readouterr().out
    assert code == 0
    assert "top-1 n/a for det: Concat" in text and "top-1 n/a for scores" not in text


def test_a_garbage_candidate_is_a_typed_error_before_shapes_are_read(tmp_path, capsys):
    ref = _dynamic_classifier(tmp_path / "dyn.onnx")
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(3).bytes(3000))
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(2, 1, 3, 8, 10)).astype(np.float32))
    code = main(["verify", tmp_path / "junk.onnx", "--reference", ref, "--data", tmp_path / "d.npz"])
    assert code == 3 and "neither TFLite nor readable ONNX" in capsys.readouterr().err


@pytest.mark.parametrize("perm, axis", [((1, 0, 2), 2), ((0, 2, 1), 1), ((2, 0, 1), 0)])
def test_a_transpose_after_the_softmax_carries_the_class_axis(perm, axis):
    """A CTC recognizer: LogSoftmax over the vocabulary of [T, N, C], transposed for the caller."""
    shape = [[6, 1, 5][p] for p in perm]
    nodes = [h.make_node("LogSoftmax", ["x"], ["p"], axis=2), h.make_node("Transpose", ["p"], ["y"], perm=perm),
             h.make_node("Reshape", ["p", "flat"], ["z"])]
    graph = h.make_graph(nodes, "ctc", [h.make_tensor_value_info("x", T.FLOAT, [6, 1, 5])],
                         [h.make_tensor_value_info("y", T.FLOAT, shape), h.make_tensor_value_info("z", T.FLOAT, [30])],
                         [nh.from_array(np.array([30], np.int64), "flat")])
    model = onnx.shape_inference.infer_shapes(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))
    axes = output_axes(model)
    assert axes["y"][0] == axis
    assert axes["z"][0] is None and "Reshape after the LogSoftmax" in axes["z"][1]
