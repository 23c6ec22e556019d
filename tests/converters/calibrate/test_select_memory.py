"""The ``auto`` scorer's fake-quant model stays about the size of the model it copies.

A recurrence unrolled by its exporter (a PyTorch LSTMCell in a loop: captcha_crnn reads each of
its 6.5 MB LSTM weights at 20 time steps) has one weight read by many MatMuls. Rounding it at
every reader added a copy per reader to the copied model's protobuf arena (upb frees nothing
until the message goes): +280 MB for a 19 MB model.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import psutil
from onnx import TensorProto, helper, numpy_helper

from converters.calibrate import select

STEPS = 48            # readers of the one weight
WIDTH = 1024          # a 4 MB float32 weight: 48 copies would be 192 MB


def _unrolled(steps: int = STEPS):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.03, (WIDTH, WIDTH)).astype(np.float32)
    nodes, prev = [], "x"
    for k in range(steps):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{k}"]))
        prev = f"h{k}"
    graph = helper.make_graph(nodes, "unrolled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, WIDTH])],
                              initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_a_weight_read_at_every_step_is_rounded_once():
    model, w = _unrolled()
    names = [f"h{k}" for k in range(STEPS)]
    process = psutil.Process()
    before = process.memory_info().rss
    fq = select.fake_quant_model(model, names)
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 48, f"the fake-quant copy grew RSS by {grown:.0f} MB for a 4 MB weight"

    # ... and it is the weight int8 will hold: per output channel (MatMul: last axis), 127 steps
    rounded = numpy_helper.to_array(next(i for i in fq.graph.initializer if i.name == "w"))
    scale = np.abs(w).max(axis=0, keepdims=True) / 127.0
    np.testing.assert_allclose(rounded, np.round(w / scale) * scale, rtol=0, atol=1e-7)
    # the scorer's model runs: identity ranges wide enough that only the weight rounding differs
    session = ort.InferenceSession(fq.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(1).normal(size=(1, WIDTH)).astype(np.float32)}
    for name in names:
        feeds[f"{name}::s"] = np.array(0.5, np.float32)
        feeds[f"{name}::z"] = np.array(0, np.int8)
    (out,) = session.run(None, feeds)
    assert out.shape == (1, WIDTH) and np.all(np.isfinite(out))
