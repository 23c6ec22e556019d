"""``--outputs``: cut a detector before its data-dependent post-processing, convert the rest, and
match onnxruntime on the cut tensors; the refusal's hint names the flag that works; unknown names
are a usage error with near matches. Runs ``edge.cli.main`` in-process, LiteRT for real."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from core.litert import make_interpreter
from edge.cli import main
from tests.converters.frontend.graphs import I64, const, model
from tests.converters.ops import harness as H

RNG = np.random.default_rng(0)


def detector(post: str) -> onnx.ModelProto:
    """x [N, 8] -> scores [N, 16] (Sigmoid) and boxes [N, 16, 4]; then ``post``-processing:
    score filtering (NonZero) or a TopK whose K is computed from the scores."""
    inits = [const("w", RNG.normal(size=(8, 16)).astype(np.float32)),
             const("wb", RNG.normal(size=(8, 64)).astype(np.float32)),
             const("bshape", np.array([-1, 16, 4], I64)), const("thr", np.float32(0.5)),
             const("zero", np.array(0, I64)), const("zero1", np.array([0], I64))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("MatMul", ["x", "wb"], ["b"]),
             helper.make_node("Reshape", ["b", "bshape"], ["boxes"])]
    if post == "nonzero":
        nodes += [helper.make_node("Greater", ["scores", "thr"], ["hit"]),
                  helper.make_node("NonZero", ["hit"], ["idx"], name="filter"),
                  helper.make_node("Gather", ["idx", "zero"], ["rows"], axis=0),
                  helper.make_node("Gather", ["boxes", "rows"], ["kept"], axis=0),
                  helper.make_node("Cast", ["kept"], ["y"], to=TensorProto.FLOAT)]
    else:
        nodes += [helper.make_node("ReduceMax", ["scores"], ["m"], keepdims=0),
                  helper.make_node("Mul", ["m", "sixteen"], ["m16"]),
                  helper.make_node("Cast", ["m16"], ["mi"], to=TensorProto.INT64),
                  helper.make_node("Unsqueeze", ["mi", "zero1"], ["k"]),
                  helper.make_node("TopK", ["scores", "k"], ["y", "yi"], name="best")]
        inits.append(const("sixteen", np.float32(16)))
    dims = ["k", 16, 4] if post == "nonzero" else ["N", "k"]
    return model(nodes, {"x": ["N", 8]}, {"y": dims}, inits, opset=17)


def with_outputs(m: onnx.ModelProto, names) -> onnx.ModelProto:
    """The reference: the whole model, the cut tensors added as outputs for onnxruntime."""
    ref = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type.tensor_type.elem_type for v in ref.graph.value_info}
    del ref.graph.output[:]
    ref.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in names)
    return ref


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out + err


def convert_cut(tmp_path, capsys, det, flag: str, quantize: str) -> tuple[dict, dict]:
    """Convert ``det`` cut at ``flag`` ("a,b"); (LiteRT outputs, onnxruntime values) by name."""
    path, calib = tmp_path / "det.onnx", tmp_path / "calib.npy"
    onnx.save(det, path)
    np.save(calib, RNG.normal(size=(16, 1, 8)).astype(np.float32))
    code, text = run(capsys, "convert", path, "--calib", calib, "--input-shape", "x=1,8", "--quantize", quantize,
                     "-q", "--outputs", flag, "-o", tmp_path / "cut.tflite")
    assert code == 0, text
    x = RNG.normal(size=(1, 8)).astype(np.float32)
    names = flag.split(",")
    want = dict(zip(names, H.ort_run(with_outputs(det, names), {"x": x})))
    interp = make_interpreter((tmp_path / "cut.tflite").read_bytes())
    (inp,) = interp.get_input_details()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}, want


@pytest.mark.parametrize("post, cut", [("nonzero", "scores,boxes"), ("topk", "scores,k")])
def test_the_refusal_hints_the_outputs_flag_that_converts(tmp_path, capsys, post, cut):
    det = detector(post)
    onnx.save(det, tmp_path / "whole.onnx")
    code, text = run(capsys, "convert", tmp_path / "whole.onnx", "--quantize", "none", "--input-shape", "x=1,8",
                     "-o", tmp_path / "whole.tflite")
    assert code == 3 and "convert.data_dependent" in text, text
    flag = re.search(r"--outputs (\S+) to cut", " ".join(text.split())).group(1)
    assert flag == cut
    got, want = convert_cut(tmp_path, capsys, det, flag, "none")
    assert sorted(got) == sorted(want)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post", ["nonzero", "topk"])
def test_cut_int8_matches_onnxruntime_on_the_cut_tensors(tmp_path, capsys, post):
    got, want = convert_cut(tmp_path, capsys, detector(post), "scores,boxes", "int8")
    assert sorted(got) == ["boxes", "scores"]
    for name, ref in want.items():
        assert H.sqnr_db(ref, got[name]) > 30, name


def test_verify_cuts_the_reference_as_the_manifest_says(tmp_path, capsys):
    path, calib = tmp_path / "det.onnx", tmp_path / "calib.npy"
    onnx.save(detector("nonzero"), path)
    np.save(calib, RNG.normal(size=(16, 1, 8)).astype(np.float32))
    code, text = run(capsys, "convert", path, "--calib", calib, "--input-shape", "x=1,8", "--outputs", "scores",
                     "--outputs", "boxes", "-o", tmp_path / "det.gpk", "-q")
    assert code == 0, text
    code, text = run(capsys, "verify", tmp_path / "det.gpk", "--reference", path, "--data", calib, "--json")
    assert code == 0, text
    assert '"scores"' in text and '"boxes"' in text


def test_unknown_output_names_list_near_matches(tmp_path, capsys):
    path = tmp_path / "det.onnx"
    onnx.save(detector("nonzero"), path)
    code, text = run(capsys, "convert", path, "--quantize", "none", "--input-shape", "x=1,8",
                     "--outputs", "scorez,boxes,nothing_like_it", "-o", tmp_path / "cut.tflite")
    assert code == 2, text
    assert "'scorez' (did you mean 'scores'" in text and "'nothing_like_it'" in text and "'boxes'" not in text
    assert not (tmp_path / "cut.tflite").exists()
