"""The float head (first N layers float, rest int8) and float data movement next to float ops.

Speed is measured in bench/op_bench.py, not here; these tests check what the emitted graph
contains (dtypes of each op, where the conversions are) and that it still computes the ONNX
model's result in the real LiteRT interpreter.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from examples.models import mobilenet_v2

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from converters.tflite.head import head_of
from converters.tgraph import TGraph, TOp, TTensor
from core.litert import make_interpreter
from edge.cli import cli, main
from tests.converters.ops import harness as H


@pytest.fixture(scope="module")
def small():
    m = frontend.prepare(mobilenet_v2.build_small())
    rng = np.random.default_rng(0)
    samples = [{"input": rng.normal(0, 1, (1, 3, 96, 96)).astype(np.float32)} for _ in range(12)]
    return m, samples, collect_ranges(m, samples, method="minmax", progress=False)


def _op_dtypes(result):
    """[(opcode, dtype of its first input)] in execution order, read back from the file."""
    interp = make_interpreter(result.flatbuffer, use_xnnpack=False)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    return [(o["op_name"], tensors[o["inputs"][0]]["dtype"]) for o in interp._get_ops_details()]


def test_head_nodes_are_the_first_layers_in_order(small):
    m, _, _ = small
    assert tflite.head_nodes(m, 0) == []
    assert tflite.head_nodes(m, 1) == ["conv_0_node"]
    assert tflite.head_nodes(m, 3) == ["conv_0_node", "conv_1_node", "conv_2_node"]
    every = tflite.head_nodes(m, 10_000)
    assert {"conv_0_node", "gemm_0_node"} <= set(every)
    assert all(name in {n.name for n in m.graph.node} for name in every)   # only ONNX names


def test_float_head_runs_the_stem_float_with_one_quantize_after_it(small):
    m, samples, ranges = small
    q = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=3))
    ops = _op_dtypes(q)
    # No QUANTIZE -> int8 TRANSPOSE -> DEQUANTIZE round trip at the input: the input TRANSPOSE and
    # the stem PAD move float bytes, the three head layers are float, then one QUANTIZE.
    assert [op for op, _ in ops[:6]] == ["TRANSPOSE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D",
                                         "QUANTIZE"], ops[:7]
    assert all(dtype == np.float32 for _, dtype in ops[:6])
    assert q.ops.count("QUANTIZE") == 1 and q.ops.count("DEQUANTIZE") == 1
    later = [dtype for op, dtype in ops[6:] if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")]
    assert later and all(dtype == np.int8 for dtype in later)


def test_float_head_keeps_fidelity(small):
    """Fewer quantized layers: SQNR against onnxruntime does not drop (0.5 dB for rounding luck)."""
    m, samples, ranges = small
    full = tflite.build(m, ranges, tflite.TFLiteOptions())
    head = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=3))
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in samples[:6]])
    got_full = np.concatenate([H.tflite_run(full, s)[0].ravel() for s in samples[:6]])
    got_head = np.concatenate([H.tflite_run(head, s)[0].ravel() for s in samples[:6]])
    assert H.sqnr_db(ref, got_head) >= H.sqnr_db(ref, got_full) - 0.5
    assert H.sqnr_db(ref, got_head) > 20


def test_float_head_with_int8_io_dequantizes_the_input_once(small):
    m, samples, ranges = small
    q = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=3, io="int8"))
    assert q.inputs[0].dtype == "int8" and q.outputs[0].dtype == "int8"
    assert q.ops[0] == "DEQUANTIZE" and q.ops.count("DEQUANTIZE") == 1, q.ops
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    assert H.sqnr_db(ref, got) > 20


def test_float_head_zero_is_the_all_int8_graph(small):
    m, _, ranges = small
    a = tflite.build(m, ranges, tflite.TFLiteOptions())
    b = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=0))
    assert a.flatbuffer == b.flatbuffer


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_bad_float_head_is_a_usage_error(bad):
    from core.errors import UsageError
    m = H.one_node("Relu", {"x": (1, 4)})
    with pytest.raises(UsageError, match="float-head"):
        tflite.build(m, {"x": (-1, 1), "y": (0, 1)}, tflite.TFLiteOptions(float_head=bad))


def test_keep_float_stem_moves_float_bytes_into_it():
    """--keep-float on a first Conv: the input TRANSPOSE and the PAD stay float (no round trip)."""
    rng = np.random.default_rng(3)
    nodes = [H.helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
             H.helper.make_node("Relu", ["c"], ["r"], name="relu"),
             H.helper.make_node("Conv", ["r", "w2"], ["y"], name="pw")]
    m = H.model(nodes, {"x": (1, 3, 16, 16)}, ["y"],
                {"w": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
                 "w2": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)})
    samples = H.samples_for(m, 8)
    ranges = collect_ranges(m, samples, method="minmax", progress=False)
    q = tflite.build(m, ranges, tflite.TFLiteOptions(keep_float=frozenset({"stem"})))
    assert q.ops == ["TRANSPOSE", "PAD", "CONV_2D", "QUANTIZE", "CONV_2D", "TRANSPOSE", "DEQUANTIZE"], q.ops
    # ... while without keep_float the graph is int8 from the input QUANTIZE on (the 3-channel
    # input's TRANSPOSE runs before it, on float bytes: tflite/io_edges.py).
    full = tflite.build(m, ranges, tflite.TFLiteOptions())
    assert full.ops == ["TRANSPOSE", "QUANTIZE", "PAD", "CONV_2D", "CONV_2D", "TRANSPOSE", "DEQUANTIZE"], full.ops
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    assert np.abs(got - ref).max() <= 3 * (ref.max() - ref.min()) / 255


def _movement_graph(reader_int8: bool) -> tuple[TGraph, set[int]]:
    """float CONV-like producer -> RESHAPE -> reader; returns the graph and the int8 op ids."""
    from converters.tflite.quantize import _demote_float_feeders
    tg = TGraph()
    x = tg.add(TTensor("x", (1, 4)))
    a = tg.add(TTensor("a", (1, 4)))
    b = tg.add(TTensor("b", (4,)))
    y = tg.add(TTensor("y", (4,)))
    ops = [TOp("RELU", [x], [a]), TOp("RESHAPE", [a, tg.add(TTensor("s", (1,), "int32",
                                                                   data=np.array([4], np.int32)))], [b]),
           TOp("RELU", [b], [y])]
    tg.ops, tg.inputs, tg.outputs = ops, [x], [y]
    int8 = {id(ops[1])} | ({id(ops[2])} if reader_int8 else set())
    _demote_float_feeders(tg, int8)
    return tg, int8


def test_movement_op_stays_int8_when_an_int8_op_reads_it():
    tg, int8 = _movement_graph(reader_int8=True)
    assert id(tg.ops[1]) in int8


def test_movement_op_read_only_by_float_ops_becomes_float():
    tg, int8 = _movement_graph(reader_int8=False)
    assert id(tg.ops[1]) not in int8


def test_movement_op_writing_a_graph_output_stays_int8():
    from converters.tflite.quantize import _demote_float_feeders
    tg, _ = _movement_graph(reader_int8=False)
    tg.outputs = [tg.ops[1].outputs[0]]
    int8 = {id(tg.ops[1])}
    _demote_float_feeders(tg, int8)
    assert id(tg.ops[1]) in int8


def test_head_of_counts_layers_not_ops():
    tg = TGraph()
    tg.ops = [TOp("PAD", [], [], None, "a"), TOp("CONV_2D", [], [], None, "a"),
              TOp("ADD", [], [], None, "b"), TOp("DEPTHWISE_CONV_2D", [], [], None, "c"),
              TOp("CONV_2D", [], [], None, "d")]
    assert head_of(tg, 0) == set()
    assert head_of(tg, 1) == {"a"}
    assert head_of(tg, 2) == {"a", "b", "c"}


def test_cli_float_head_records_the_kept_nodes(tmp_path, small, capsys):
    m, samples, _ = small
    import onnx
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=np.concatenate([s["input"] for s in samples]))
    out = tmp_path / "m.gpk"
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                                 "--float-head", "3", "-q", "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output[r.output.index("{"):])
    assert sorted(doc["keep_float"]) == ["conv_0_node", "conv_1_node", "conv_2_node"], doc
    code = main(["convert", str(tmp_path / "m.onnx"), "--quantize", "none", "--float-head", "2",
                 "-o", str(tmp_path / "f.tflite")])
    assert code != 0 and "--float-head" in capsys.readouterr().err
    assert not (tmp_path / "f.tflite").exists()


def test_build_reports_its_head_as_head_nodes_does(small):
    """The build reads the head off its own lowering; head_nodes (the QDQ-only path) lowers
    separately. Both must name the same ONNX nodes, whatever the layout."""
    m, _, ranges = small
    for n in (1, 3, 7):
        for layout in ("onnx", "nhwc"):
            q = tflite.build(m, ranges, tflite.TFLiteOptions(float_head=n, layout=layout))
            assert q.float_head == tflite.head_nodes(m, n), (n, layout)
    assert tflite.build(m, ranges, tflite.TFLiteOptions()).float_head == []


@pytest.mark.parametrize("target, lowerings", [("tflite", 2), ("both", 2), ("qdq", 2)])
def test_convert_with_a_float_head_lowers_the_model_once(tmp_path, small, monkeypatch, target, lowerings):
    """A spy around the real lowering counts calls: the head comes from the TFLite build's own
    lowering, and only a QDQ-only conversion lowers just to find it. (The other lowering is the
    ``auto`` observer's view of the int8 model, ``tflite.int8_view``, made before calibration
    for every target, so ``qdq`` alone gets the ranges ``both`` gets.)"""
    import onnx

    import converters.lower
    from converters import api
    from converters.config import ConvertConfig
    m, samples, _ = small
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=np.concatenate([s["input"] for s in samples]))
    real, calls = converters.lower.lower, []
    monkeypatch.setattr(converters.lower, "lower", lambda graph: calls.append(1) or real(graph))
    result = api.convert(ConvertConfig(model=tmp_path / "m.onnx", output=tmp_path / "m.gpk", target=target,
                                       calib=tmp_path / "calib.npz", float_head=3, progress=False))
    assert len(calls) == lowerings
    assert result.keep_float == ["conv_0_node", "conv_1_node", "conv_2_node"]
    if target != "tflite":      # the QDQ model keeps the same three Convs float (plain float weights)
        q = onnx.load_from_string(result.files["model.qdq.onnx"])
        inits = {i.name for i in q.graph.initializer}
        assert sorted(n.name for n in q.graph.node if n.op_type == "Conv" and n.input[1] in inits) \
            == result.keep_float
