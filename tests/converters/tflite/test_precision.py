"""precision.py's output-head rule: a SOFTMAX that writes a graph output and whose values pass
the top of its fixed int8 grid stays float (real LiteRT vs onnxruntime)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from converters.tflite import precision
from converters.verify.metrics import sqnr_db
from tests.converters.ops import harness as H

HEADS = {"Softmax": {"axis": -1}, "Sigmoid": {}, "Tanh": {}}


def head_model(op: str, tail: str | None = None):
    """x [4, 8] -> Gemm (2 classes, a confident classifier: logits near +6 and -6) -> op [-> tail] -> y."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(0, 0.3, (8, 2)).astype(np.float32), "b": np.array([6.0, -6.0], np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"]),
             helper.make_node(op, ["logits"], ["p"], **HEADS[op])]
    if tail == "Reshape":
        nodes.append(helper.make_node("Reshape", ["p", "shape"], ["y"]))
        inits["shape"] = np.array([8], np.int64)
    elif tail == "Relu":          # an op that is not data movement reads the head: it stays int8
        nodes.append(helper.make_node("Relu", ["p"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    return H.model(nodes, {"x": (4, 8)}, ["y"], inits)


def int8_sqnr(m, samples) -> tuple[float, list[str]]:
    q = H.convert(m, "int8", samples=samples)
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in samples])
    got = np.concatenate([H.tflite_run(q, s)[0].ravel() for s in samples])
    return sqnr_db(ref, got), q.ops


def test_a_saturating_softmax_output_stays_float(monkeypatch):
    m = head_model("Softmax")
    samples = H.samples_for(m, 16)
    sqnr, ops = int8_sqnr(m, samples)
    opcode = "SOFTMAX"
    assert ops[ops.index(opcode) - 1] == "DEQUANTIZE"
    monkeypatch.setattr(precision, "OUTPUT_HEADS", set())      # the rule off: the int8 grid's cap
    capped, capped_ops = int8_sqnr(m, samples)
    assert "DEQUANTIZE" not in capped_ops[:capped_ops.index(opcode)]
    assert sqnr > capped + 6.0, (sqnr, capped)      # measured: 92-126 vs 48 dB


@pytest.mark.parametrize("tail", ["Relu", "Reshape"])
def test_a_head_read_by_another_op_stays_int8(tail):
    """Read by compute, or by a copy (a Reshape, an NHWC layout TRANSPOSE) that int8 would
    round again anyway."""
    m = head_model("Softmax", tail)
    _, ops = int8_sqnr(m, H.samples_for(m, 16))
    assert "DEQUANTIZE" not in ops[:ops.index("SOFTMAX")]


def test_a_head_inside_the_grid_stays_int8():
    samples = H.samples_for(head_model("Softmax"), 16)
    m = head_model("Softmax")
    bias = next(i for i in m.graph.initializer if i.name == "b")
    bias.CopyFrom(helper.make_tensor("b", 1, [2], [0.5, -0.5]))              # p0 < 0.9: inside the grid
    _, ops = int8_sqnr(m, samples)
    assert "DEQUANTIZE" not in ops[:ops.index("SOFTMAX")]
    _, ops = int8_sqnr(head_model("Sigmoid"), samples)        # LOGISTIC keeps its int8 input cut (module doc)
    assert "DEQUANTIZE" not in ops[:ops.index("LOGISTIC")]
