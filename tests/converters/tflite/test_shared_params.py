"""The writer stores identical quantization vectors once (writer._SharedQuant), and the shared
file runs bit-identically to one with a copy per tensor."""
import ai_edge_litert.schema_py_generated as schema
import flatbuffers
import numpy as np
from onnx import helper

from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(5)
SCALE_FIELD, ZERO_POINT_FIELD = 8, 10          # vtable offsets in QuantizationParameters


def _cnn():
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"])]
    inits = {"w1": RNG.normal(0, 0.4, (8, 3, 3, 3)), "b1": RNG.normal(0, 0.1, 8),
             "w2": RNG.normal(0, 0.4, (8, 1, 3, 3)), "b2": RNG.normal(0, 0.1, 8),
             "w3": RNG.normal(0, 0.4, (8, 8, 1, 1)), "b3": RNG.normal(0, 0.1, 8)}
    return H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"],
                   {k: v.astype(np.float32) for k, v in inits.items()})


def _unshared(flat: bytes) -> bytes:
    """The same model re-packed by the plain object API: one copy of every vector per tensor."""
    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    builder = flatbuffers.Builder(len(flat))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _vector_positions(flat: bytes, field: int) -> dict[int, bytes]:
    """Where each tensor's vector is stored -> its bytes (one key per stored copy)."""
    sub = schema.Model.GetRootAs(flat, 0).Subgraphs(0)
    stored = {}
    for i in range(sub.TensorsLength()):
        q = sub.Tensors(i).Quantization()
        if q is None or not q._tab.Offset(field):
            continue
        start = q._tab.Vector(q._tab.Offset(field))
        n = q._tab.VectorLen(q._tab.Offset(field))
        stored[start] = flat[start:start + n * 8]       # zero points are int64, scales float32
    return stored


def _run(flat: bytes, feeds):
    interp = make_interpreter(flat)
    outs = []
    for sample in feeds:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample["x"])
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return outs


def test_identical_zero_points_are_stored_once():
    m = _cnn()
    flat = H.convert(m, "int8", samples=H.samples_for(m, 8)).flatbuffer
    tensors = schema.ModelT.InitFromPackedBuf(flat, 0).subgraphs[0].tensors
    per_channel = [t for t in tensors if t.quantization is not None and len(t.quantization.zeroPoint) == 8]
    assert len(per_channel) >= 6                         # 3 weights + 3 biases with 8 channels
    stored = _vector_positions(flat, ZERO_POINT_FIELD)
    eight_zero = [pos for pos, data in stored.items() if data[:64] == bytes(64) and len(data) == 64]
    assert len(eight_zero) == 1                          # all of them point at one vector
    plain = _unshared(flat)
    assert len(_vector_positions(plain, ZERO_POINT_FIELD)) > len(stored)
    assert len(flat) < len(plain)


def test_shared_file_runs_bit_identically():
    m = _cnn()
    flat = H.convert(m, "int8", samples=H.samples_for(m, 8)).flatbuffer
    feeds = H.samples_for(m, 4)
    for a, b in zip(_run(flat, feeds), _run(_unshared(flat), feeds)):
        np.testing.assert_array_equal(a, b)
    # and the parameters read back are the same values the plain writer stores
    for a, b in zip(schema.ModelT.InitFromPackedBuf(flat, 0).subgraphs[0].tensors,
                    schema.ModelT.InitFromPackedBuf(_unshared(flat), 0).subgraphs[0].tensors):
        if a.quantization is not None:
            np.testing.assert_array_equal(a.quantization.scale, b.quantization.scale)
            np.testing.assert_array_equal(a.quantization.zeroPoint, b.quantization.zeroPoint)
            assert a.quantization.quantizedDimension == b.quantization.quantizedDimension
