"""QDQ models with control flow: If branches that read outer-scope initializers and tensors.

A branch reads names of the graph around it (https://onnx.ai/onnx/operators/onnx__If.html); the
QDQ writer must keep those names alive (an initializer only a branch reads) and unshadowed, or
the model fails the ONNX checker ("is not output of any previous nodes": issue 8's voice-activity
detector). The QDQ model runs in onnxruntime and is compared with the float model.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import api
from converters.calibrate import collect_ranges
from converters.config import ConvertConfig
from converters.qdq import PROFILES, build
from tests.converters.ops.harness import sqnr_db

WIDTH = 8


def if_model() -> onnx.ModelProto:
    """x -> MatMul(W0) -> h; If(sr == 16000): h @ W_then + b (initializers of the outer graph), else h @ W_else."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32), name)
             for name in ("w0", "w_then", "w_else")]
    inits += [numpy_helper.from_array(rng.normal(size=WIDTH).astype(np.float32), "b_then"),
              numpy_helper.from_array(np.array(16000, np.int64), "sr_16k")]

    def branch(name, nodes):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info("y_" + name, TensorProto.FLOAT, None)])

    then = branch("then", [helper.make_node("MatMul", ["h", "w_then"], ["t0"], name="then_mm"),
                           helper.make_node("Add", ["t0", "b_then"], ["y_then"], name="then_add")])
    other = branch("else", [helper.make_node("MatMul", ["h", "w_else"], ["y_else"], name="else_mm")])
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
             helper.make_node("Equal", ["sr", "sr_16k"], ["is_16k"], name="is_16k"),
             helper.make_node("If", ["is_16k"], ["y"], name="If_sr", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "if_sr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH]),
                                               helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(model, full_check=True)
    return model


def samples(count: int, seed: int, sr: int = 16000) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, WIDTH)).astype(np.float32), "sr": np.array(sr, np.int64)}
            for _ in range(count)]


def run(model: onnx.ModelProto, feeds: list[dict]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return np.stack([session.run(["y"], {k: v for k, v in feed.items() if k in names})[0] for feed in feeds])


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("sr", [16000, 8000])
def test_if_branches_reading_outer_initializers_stay_valid_and_close_to_float(profile, sr):
    model = if_model()
    calib = samples(16, 0, sr)
    qdq = build(model, collect_ranges(model, calib), profile=profile, samples=calib)
    names = {i.name for i in qdq.graph.initializer}
    assert {"w_then", "b_then", "w_else"} <= names      # read only inside the branches
    assert "QuantizeLinear" in {n.op_type for n in qdq.graph.node}
    held = samples(12, 1, sr)
    assert sqnr_db(run(model, held), run(qdq, held)) > 30


def test_convert_qdq_freezes_a_constant_sample_rate_and_matches_float(tmp_path):
    """The issue-8 path: ``sr`` holds one value in the calibration data, so it is frozen."""
    path = tmp_path / "if_sr.onnx"
    onnx.save(if_model(), path)
    calib, held = samples(16, 0), samples(12, 1)
    np.savez(tmp_path / "calib.npz", x=np.stack([s["x"] for s in calib]), sr=np.stack([s["sr"] for s in calib]))
    with pytest.warns(api.FrozenInputWarning):
        api.convert(ConvertConfig(model=path, output=tmp_path / "q.onnx", calib=tmp_path / "calib.npz",
                                  target="qdq", progress=False))
    qdq = onnx.load(tmp_path / "q.onnx")
    assert [i.name for i in qdq.graph.input] == ["x"]
    # the live branch is inlined (frontend/inline_if.py), so its MatMul is quantized too
    ops = {n.name: n for n in qdq.graph.node}
    assert "If_sr" not in ops and all(i.endswith("_dequantized") for i in ops["then_mm"].input)
    assert sqnr_db(run(if_model(), held), run(qdq, held)) > 30
