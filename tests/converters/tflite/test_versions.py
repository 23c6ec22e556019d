"""Operator versions in the written model: the int8 variants declare the versions the TFLite
converter declares (tflite/versions.py), float ops keep 1, and the models load and run in LiteRT."""
import numpy as np
import pytest
from onnx import helper

import ai_edge_litert.schema_py_generated as schema
from tests.converters.ops import harness as H

RNG = np.random.default_rng(5)
NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def versions(result) -> dict[str, set[int]]:
    model = schema.ModelT.InitFromPackedBuf(result.flatbuffer, 0)
    found: dict[str, set[int]] = {}
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        found.setdefault(NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)], set()).add(code.version)
    return found


def classifier(bias: bool):
    """Conv(3x3, pads) + Relu -> Add -> Conv(1x1) -> GlobalAveragePool -> Flatten -> Gemm: the ops of
    a MobileNet-style network."""
    inits = {"w": RNG.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32),
             "w2": RNG.normal(0, 0.4, (4, 4, 1, 1)).astype(np.float32),
             "fc": RNG.normal(0, 0.4, (5, 4)).astype(np.float32)}
    gemm_inputs = ["f", "fc"]
    if bias:
        inits["fb"] = RNG.normal(0, 0.1, (5,)).astype(np.float32)
        gemm_inputs.append("fb")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", gemm_inputs, ["y"], transB=1)]
    return H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)


@pytest.mark.parametrize("quantize, bias, want", [
    ("int8", True, {"CONV_2D": {3}, "ADD": {2}, "MEAN": {2}, "FULLY_CONNECTED": {4}, "QUANTIZE": {1},
                    "DEQUANTIZE": {2}}),
    ("int8", False, {"CONV_2D": {3}, "FULLY_CONNECTED": {4}}),       # the lowering writes a zero bias
    ("none", True, {"CONV_2D": {1}, "ADD": {1}, "MEAN": {1}, "FULLY_CONNECTED": {1}}),
])
def test_int8_ops_declare_their_int8_versions(quantize, bias, want):
    m = classifier(bias)
    samples = H.samples_for(m, 8)
    result = H.convert(m, quantize, samples)
    found = versions(result)
    assert {op: found.get(op) for op in want} == want, found
    got = H.tflite_run(result, samples[0])[0]          # it loads and runs in LiteRT (XNNPACK on)
    ref = H.ort_run(m, samples[0])[0]
    assert np.abs(got - ref).max() <= (0.15 if quantize == "int8" else 1e-4) * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("opcode, inputs, want", [
    ("FULLY_CONNECTED", [(("int8",), (1, 4)), (("int8",), (5, 4))], 6),          # no bias
    ("FULLY_CONNECTED", [(("float32",), (1, 4)), (("float32",), (5, 4))], 6),
    ("FULLY_CONNECTED", [(("float32",), (1, 4)), (("int8",), (5, 4))], 1),       # hybrid: not listed
    ("TRANSPOSE", [(("int8",), (1, 2, 3, 4, 5)), (("int32",), (5,))], 4),       # rank 5
    ("TRANSPOSE", [(("int8",), (1, 2, 3, 4)), (("int32",), (4,))], 2),
    ("TRANSPOSE", [(("float32",), (1, 2, 3, 4)), (("int32",), (4,))], 1),
    ("SPLIT", [(("int32",), ()), (("int8",), (2, 4))], 2),                      # its data is input 1
    ("LOG", [(("int8",), (2, 4))], 1),                                            # not in the table
])
def test_version_rules(opcode, inputs, want):
    from converters.tgraph import TGraph, TOp, TTensor
    from converters.tflite.versions import op_version
    tg = TGraph()
    ids = [tg.add(TTensor(f"t{k}", shape, dtype)) for k, ((dtype,), shape) in enumerate(inputs)]
    out = tg.add(TTensor("out", (1,), inputs[0][0][0] if opcode != "SPLIT" else "int8"))
    assert op_version(tg, TOp(opcode, ids, [out])) == want
