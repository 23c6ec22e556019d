"""One rule for node names (converters/frontend/names.py), the same in every place that takes or shows one.

The model below has an unnamed Conv, a name used twice ("act") and a Gemm name used twice ("fc"),
the cases where the TFLite builder, the QDQ builder and ``convert`` used to disagree about which
--keep-float names exist. Every test runs the converted models in LiteRT / onnxruntime or reads
them back from their bytes.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from converters import api, frontend, qdq, tflite
from converters.calibrate import collect_ranges
from converters.config import ConvertConfig
from converters.frontend.names import check_keep_float, name_nodes, node_names
from converters.inspect import inspect, render
from converters.verify import per_layer
from core.errors import UsageError
from core.litert import make_interpreter
from tests.converters.ops import harness as H

NAMES = ["Conv_0", "act", "conv", "act_1", "Flatten_4", "fc", "fc_1"]


def _raw_model() -> onnx.ModelProto:
    """As an exporter might write it: unnamed and repeated names, as they are in the file."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),       # unnamed
             helper.make_node("Relu", ["c0"], ["r0"], name="act"),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="act"),                           # repeat
             helper.make_node("Flatten", ["r1"], ["f"]),                                      # unnamed
             helper.make_node("Gemm", ["f", "g0", "h0"], ["y0"], name="fc", transB=1),
             helper.make_node("Gemm", ["y0", "g1", "h1"], ["y"], name="fc", transB=1)]        # repeat
    inits = {"w0": rng.normal(0, 0.3, (4, 3, 3, 3)), "b0": rng.normal(0, 0.1, 4),
             "w1": rng.normal(0, 0.3, (4, 4, 3, 3)), "b1": rng.normal(0, 0.1, 4),
             "g0": rng.normal(0, 0.2, (16, 64)), "h0": rng.normal(0, 0.1, 16),
             "g1": rng.normal(0, 0.2, (5, 16)), "h1": rng.normal(0, 0.1, 5)}
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(m)        # the output shape the checker wants


def _model() -> onnx.ModelProto:
    """The raw model through the frontend (frontend.prepare), which names every node."""
    return frontend.prepare(_raw_model())


@pytest.fixture(scope="module")
def case():
    m = _model()
    samples = H.samples_for(m, 16)
    return m, samples, collect_ranges(m, samples, progress=False)


def _tflite_float_nodes(result) -> list[str]:
    """Weight-carrying ops of a TFLite model that run in float, named by their output tensor."""
    interp = make_interpreter(result.flatbuffer, use_xnnpack=False)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    return [tensors[o["outputs"][0]]["name"] for o in interp._get_ops_details()
            if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and tensors[o["inputs"][0]]["dtype"] == np.float32]


def _qdq_float_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/Gemm nodes of a QDQ model whose weight is a plain float initializer (not dequantized)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]


def test_the_rule_unnamed_repeated_and_taken_names():
    raw = _raw_model()
    assert [n.name for n in raw.graph.node] == ["", "act", "conv", "act", "", "fc", "fc"]
    assert node_names(raw) == NAMES
    assert [n.name for n in _model().graph.node] == NAMES        # the frontend names them
    # a synthesized name that a real node already has moves aside like a repeat
    g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"], name="Relu_1"),
                           helper.make_node("Relu", ["b"], ["c"])], "g", [], [])
    assert node_names(g) == ["Relu_1", "Relu_1_1"]
    name_nodes(g)
    assert [n.name for n in g.node] == ["Relu_1", "Relu_1_1"]


def test_unknown_names_are_one_usage_error_with_every_name_and_a_guess():
    with pytest.raises(UsageError) as info:
        check_keep_float(_model(), {"fc_2", "Conv_0", "nope", ""})
    err = info.value
    assert err.code == "usage.keep_float" and err.exit_code == 2
    assert err.message == "--keep-float names unknown node(s): , fc_2, nope"
    assert "fc_2 -> fc" in err.hint and "<OpType>_<index>" in err.hint
    assert check_keep_float(_model(), ["Conv_0", "fc_1"]) == {"Conv_0", "fc_1"}


@pytest.mark.parametrize("bad", [{"fc_2"}, {""}, {"Conv"}])
def test_both_targets_refuse_the_same_names_with_the_same_error(case, bad):
    m, _, ranges = case
    with pytest.raises(UsageError) as from_tflite:
        tflite.build(m, ranges, tflite.TFLiteOptions(keep_float=frozenset(bad)))
    with pytest.raises(UsageError) as from_qdq:
        qdq.build(m, ranges, keep_float=bad)
    assert from_tflite.value.to_dict() == from_qdq.value.to_dict()


@pytest.mark.parametrize("keep, tflite_float, qdq_float", [
    ({"Conv_0"}, ["r0"], ["Conv_0"]),          # an unnamed node, by <OpType>_<index>
    # The first "act" / its repeat "act_1". TFLite fuses each Relu into its Conv, so the name keeps
    # that one op float; QDQ, written from the same IR, keeps the Relu's Conv float too.
    ({"act"}, ["r0"], ["Conv_0"]),
    ({"act_1"}, ["r1"], ["conv"]),
    ({"fc"}, ["y0"], ["fc"]),                  # the first "fc" only
    ({"fc_1"}, ["y"], ["fc_1"]),
])
def test_both_targets_keep_the_same_nodes_float(case, keep, tflite_float, qdq_float):
    m, samples, ranges = case
    t = tflite.build(m, ranges, tflite.TFLiteOptions(keep_float=frozenset(keep)))
    q = qdq.build(m, ranges, keep_float=keep)
    assert _tflite_float_nodes(t) == tflite_float
    assert _qdq_float_nodes(q) == qdq_float
    # both still compute the model: LiteRT and onnxruntime against the float graph
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in samples])
    got_t = np.concatenate([H.tflite_run(t, s)[0].ravel() for s in samples])
    got_q = np.concatenate([H.ort_run(q, s)[0].ravel() for s in samples])
    assert H.sqnr_db(ref, got_t) > 25 and H.sqnr_db(ref, got_q) > 25


def test_qdq_model_nodes_carry_the_names(case):
    m, _, ranges = case
    names = [n.name for n in qdq.build(m, ranges).graph.node
             if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert names == NAMES


def test_inspect_and_per_layer_show_names_keep_float_takes(case, tmp_path):
    m, samples, ranges = case
    path = tmp_path / "m.onnx"
    onnx.save(_raw_model(), str(path))                  # the file as exported: inspect reads it raw
    info = inspect(path)
    assert [n["name"] for n in info["node_list"]] == NAMES
    assert "Conv_0" in render(info) and "Flatten_4" in render(info)
    t = tflite.build(m, ranges, tflite.TFLiteOptions())
    rows = per_layer.rank(m, t.flatbuffer, t.tensor_map, samples)
    assert {row["node"] for row in rows} <= set(NAMES)
    check_keep_float(m, [row["node"] for row in rows])          # each can be fed back


def test_convert_float_head_on_unnamed_nodes_reaches_both_targets(case, tmp_path):
    """The head names an unnamed Conv as Conv_0; the QDQ target used to refuse that name."""
    _, samples, _ = case
    src, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(_raw_model(), str(src))                   # repeated names: onnxruntime alone refuses it
    np.savez(calib, x=np.concatenate([s["x"] for s in samples]))
    result = api.convert(ConvertConfig(model=src, output=tmp_path / "m.gpk", target="both", calib=calib,
                                       float_head=1, keep_float=frozenset({"fc_1"}), progress=False))
    assert result.keep_float == ["Conv_0", "fc_1"]
    assert result.manifest["quantization"]["keep_float"] == ["Conv_0", "fc_1"]
    q = onnx.load_from_string(result.files["model.qdq.onnx"])
    assert _qdq_float_nodes(q) == ["Conv_0", "fc_1"]


def test_cli_refuses_a_repeated_name_beyond_the_last_and_suggests_one(tmp_path, capsys):
    from edge.cli import main
    src = tmp_path / "m.onnx"
    onnx.save(_raw_model(), str(src))
    np.savez(tmp_path / "c.npz", x=np.zeros((8, 3, 4, 4), np.float32))
    code = main(["convert", str(src), "--calib", str(tmp_path / "c.npz"), "--keep-float", "act_2",
                 "-o", str(tmp_path / "o.tflite"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "act_2" in err and "did you mean" in err
    assert not (tmp_path / "o.tflite").exists()
