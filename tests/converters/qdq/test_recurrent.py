"""QDQ target with recurrent layers: LSTM / GRU / RNN stay float inside the QDQ graph, the layers
around them are quantized, and onnxruntime runs the result close to float.

Why float: onnxruntime has no static int8 LSTM/GRU/RNN kernel (only the dynamic
com.microsoft.DynamicQuantizeLSTM) and TensorRT's explicit quantization takes no int8 recurrent
layer, so Q/DQ pairs around a recurrent node would only add rounding.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from converters import qdq
from converters.calibrate import collect_ranges
from tests.converters.ops import harness as H

RNG = np.random.default_rng(3)
T, I, HID = 8, 6, 16
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def w(*shape, scale=0.4):
    return RNG.normal(0, scale, shape).astype(np.float32)


def sandwich(op: str, direction: str = "forward"):
    """MatMul -> Relu -> <op> -> Squeeze(Y_h) -> Gemm: quantizable layers on both sides."""
    dirs, g = (2 if direction == "bidirectional" else 1), GATES[op]
    inits = {"Wi": w(I, I), "W": w(dirs, g * HID, I), "R": w(dirs, g * HID, HID), "B": w(dirs, 2 * g * HID, scale=0.2),
             "shape": np.array([1, dirs * HID], np.int64), "Wo": w(dirs * HID, 3), "bo": w(3)}
    nodes = [helper.make_node("MatMul", ["x", "Wi"], ["a"]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node(op, ["ar", "W", "R", "B"], ["Y", "Y_h"], hidden_size=HID, direction=direction),
             helper.make_node("Reshape", ["Y_h", "shape"], ["hf"]),
             helper.make_node("Gemm", ["hf", "Wo", "bo"], ["out"])]
    return H.model(nodes, {"x": (T, 1, I)}, ["out"], inits)


@pytest.mark.parametrize("profile", sorted(qdq.PROFILES))
@pytest.mark.parametrize("op,direction", [("LSTM", "forward"), ("LSTM", "bidirectional"),
                                          ("GRU", "reverse"), ("RNN", "forward")])
def test_recurrent_node_stays_float_and_neighbours_are_quantized(op, direction, profile):
    m = sandwich(op, direction)
    samples = H.samples_for(m, n=16)
    ranges = collect_ranges(m, samples, method="minmax", progress=False)
    q = qdq.build(m, ranges, profile=profile, samples=samples)
    producer = {o: n for n in q.graph.node for o in n.output}
    rnn = next(n for n in q.graph.node if n.op_type == op)
    fed_by = [producer[i].op_type if i in producer else "initializer/input" for i in rnn.input if i]
    assert "DequantizeLinear" not in fed_by, f"{op} inputs come from {fed_by}"
    for quantized in ("MatMul", "Gemm"):
        node = next(n for n in q.graph.node if n.op_type == quantized)
        assert producer[node.input[0]].op_type == "DequantizeLinear", f"{quantized} not quantized"
    refs, gots = [], []
    for s in samples[:8]:
        refs.append(H.ort_run(m, s)[0])
        gots.append(H.ort_run(q, s)[0])
    sqnr = H.sqnr_db(np.stack(refs), np.stack(gots))
    assert sqnr >= 20.0, f"QDQ {profile} with a float {op}: {sqnr:.1f} dB"
