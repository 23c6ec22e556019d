"""Flatbuffer structure and the tensor_map contract (ONNX name -> TFLite index + perm)."""
import ai_edge_litert.schema_py_generated as schema
import flatbuffers
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate.runner import expose
from converters.tflite import writer
from converters.tgraph import QParams, TGraph, TTensor
from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(11)


def _cnn():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    return H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"],
                   {"w": RNG.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32),
                    "w2": RNG.normal(0, 0.4, (4, 4, 1, 1)).astype(np.float32)})


def test_flatbuffer_structure():
    res = tflite.build(_cnn(), None, tflite.TFLiteOptions(quantize="none"))
    assert res.flatbuffer[4:8] == b"TFL3"
    model = schema.ModelT.InitFromPackedBuf(res.flatbuffer, 0)
    assert model.version == 3 and len(model.subgraphs) == 1
    assert model.buffers[0].data is None                       # buffer 0: the empty sentinel
    used = [t.buffer for t in model.subgraphs[0].tensors if t.buffer]
    assert len(used) == len(set(used))                         # one buffer per constant


def test_tensor_map_values_match_onnxruntime():
    m = _cnn()
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    names = ["r1", "c2", "a", "g", "y"]
    assert set(names) <= set(res.tensor_map)
    feeds = H.samples_for(m, 1)[0]
    ref = dict(zip(names, H.ort_run(expose(m, names), feeds)))
    interp = make_interpreter(res.flatbuffer, preserve_all_tensors=True, use_xnnpack=False)
    interp.set_tensor(res.inputs[0].index, feeds["x"])
    interp.invoke()
    for name in names:
        entry = res.tensor_map[name]
        want = ref[name] if entry["perm"] is None else np.transpose(ref[name], entry["perm"])
        np.testing.assert_allclose(interp.get_tensor(entry["index"]), want, atol=1e-5, rtol=1e-5)
    assert res.tensor_map["r1"]["perm"] == [0, 2, 3, 1]        # activations inside are NHWC
    assert res.tensor_map["y"]["perm"] is None


def test_io_specs_describe_the_interpreter():
    m = _cnn()
    q = H.convert(m, "int8", samples=H.samples_for(m, 8), io="uint8")
    interp = make_interpreter(q.flatbuffer)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert inp["index"] == q.inputs[0].index and inp["dtype"] == np.uint8
    assert inp["quantization"] == pytest.approx((q.inputs[0].scale, q.inputs[0].zero_point))
    assert out["name"] == "y" and list(out["shape"]) == q.outputs[0].shape
    assert q.inputs[0].to_dict()["name"] == "x"


def test_measured_ranges_of_internal_tensors_are_real():
    """With samples, tensors the lowering creates get the min/max they really take in LiteRT."""
    from converters.frontend import to_graph
    from converters.lower import lower
    from converters.passes import run_pipeline
    from converters.tflite import _feeds, ranges as ranges_mod

    m = H.one_node("LayerNormalization", {"x": (4, 16)},
                   {"s": np.ones(16, np.float32), "b": np.zeros(16, np.float32)}, axis=-1)
    samples = H.samples_for(m, 4)
    graph = to_graph(m)
    run_pipeline(graph)
    tg = lower(graph)
    measured = ranges_mod.measure(tg, samples, lambda s: _feeds(tg, s))
    var = next(i for i, t in enumerate(tg.tensors) if "/var__" in t.name)
    x = np.stack([s["x"] for s in samples])
    true_var = x.var(axis=-1)
    assert measured[var] == pytest.approx((true_var.min(), true_var.max()), rel=1e-4)


def test_io_spec_dict_has_flat_and_nested_quant():
    m = _cnn()
    q = H.convert(m, "int8", samples=H.samples_for(m, 4), io="int8")
    d = q.inputs[0].to_dict()
    assert d["quant"] == {"scale": d["scale"], "zero_point": d["zero_point"]} and d["scale"] > 0
    f = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert f.inputs[0].to_dict()["quant"] is None


def test_measurement_through_extra_outputs_matches_preserved_tensors():
    """measure_stats runs with XNNPACK and the watched tensors as graph outputs; the values must
    be those the plain kernels leave in every tensor (preserve_all_tensors, no delegate)."""
    from converters.frontend import to_graph
    from converters.lower import lower
    from converters.passes import run_pipeline
    from converters.tflite import _feeds, ranges as ranges_mod
    from converters.tflite.writer import serialize

    m = _cnn()
    samples = H.samples_for(m, 6)
    graph = to_graph(m)
    run_pipeline(graph)
    tg = lower(graph)
    floats = [i for i, t in enumerate(tg.tensors) if not t.is_const and t.dtype == "float32"]
    layer_inputs = frozenset(op.inputs[0] for op in tg.ops if op.opcode == "CONV_2D")
    found, means = ranges_mod.measure_stats(tg, samples, lambda s: _feeds(tg, s), layer_inputs)
    assert set(found) == set(floats) and set(means) == layer_inputs
    interp = make_interpreter(serialize(tg), preserve_all_tensors=True, use_xnnpack=False)
    want: dict = {}
    for s in samples:
        for i, v in _feeds(tg, s).items():
            interp.set_tensor(i, v)
        interp.invoke()
        for i in floats:
            v = interp.get_tensor(i)
            want[i] = ranges_mod.union(want.get(i), (float(v.min()), float(v.max())))
    for i in floats:
        assert found[i] == pytest.approx(want[i], rel=1e-5, abs=1e-6), tg.tensors[i].name
    assert len(serialize(tg)) < len(serialize(tg, extra_outputs=sorted(layer_inputs)))
    assert schema.ModelT.InitFromPackedBuf(serialize(tg), 0).subgraphs[0].outputs.tolist() == tg.outputs



def test_constant_buffers_hold_the_tensor_bytes_and_the_builder_never_grows(monkeypatch):
    """The writer packs constant buffers straight from the arrays into a builder sized up front
    (issue 8): every buffer holds exactly its tensor's bytes (any dtype, a broadcast view and a
    transposed view too), and no doubling (a full copy of the model) happens."""
    def refuse(self):
        raise AssertionError("the flatbuffer builder grew: the size hint is too small")

    monkeypatch.setattr(flatbuffers.Builder, "GrowByteBuffer", refuse)
    consts = {"f32": RNG.normal(size=(5, 7)).astype(np.float32),
              "f32_t": RNG.normal(size=(7, 5)).astype(np.float32).T,
              "splat": np.broadcast_to(np.float32(0.25), (300, 3)),
              "f16": RNG.normal(size=(9,)).astype(np.float16),
              "i8": RNG.integers(-127, 128, (4, 3), dtype=np.int8),
              "i32": RNG.integers(-1000, 1000, (4,), dtype=np.int32),
              "flag": np.array([True, False, True]),
              "empty": np.zeros((0,), np.float32)}
    tg = TGraph()
    for name, value in consts.items():
        dtype = {"bool": "bool"}.get(value.dtype.name, value.dtype.name)
        quant = QParams(np.full(4, 0.1, np.float32), np.zeros(4, np.int64)) if name == "i8" else None
        tg.add(TTensor(name, tuple(value.shape), dtype, data=value, quant=quant))
    model = schema.ModelT.InitFromPackedBuf(writer.serialize(tg), 0)
    tensors = model.subgraphs[0].tensors
    assert [t.name.decode() for t in tensors] == list(consts)
    for t, value in zip(tensors, consts.values()):
        data = model.buffers[t.buffer].data
        assert (b"" if data is None else data.tobytes()) == np.ascontiguousarray(value).tobytes(), t.name
