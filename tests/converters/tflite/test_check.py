"""The write-time int8 checker refuses exactly what LiteRT refuses at prepare time.

Each case is a hand-built TGraph (or a converted model's flatbuffer edited by hand); the broken
file is also written with the checker disabled and loaded, to show LiteRT really refuses it."""
import subprocess
import sys

import ai_edge_litert.schema_py_generated as schema
import flatbuffers
import numpy as np
import pytest

from converters.tflite import writer
from converters.tflite.check import Int8ParamsError, check_flatbuffer
from converters.tgraph import QParams, TGraph, TOp, TTensor
from core.litert import make_interpreter
from tests.converters.ops import harness as H
from tests.converters.tflite.test_ties import branches_of_different_ranges

ULP_UP = float(np.nextafter(np.float32(0.05), np.float32(1)))


def _act(tg, name, shape, scale, zp=0):
    return tg.add(TTensor(name, shape, "int8", quant=QParams.per_tensor(scale, zp)))


def concat_graph(second_scale=0.05, second_zp=0):
    tg = TGraph()
    a, b = _act(tg, "a", (1, 4), 0.05), _act(tg, "b", (1, 4), second_scale, second_zp)
    y = _act(tg, "y", (1, 8), 0.05)
    options = schema.ConcatenationOptionsT()
    options.axis = 1
    tg.ops.append(TOp("CONCATENATION", [a, b], [y], options, "concat_node"))
    tg.inputs, tg.outputs = [a, b], [y]
    return tg


def conv_graph(multiplier):
    tg = TGraph()
    x = _act(tg, "x", (1, 4, 4, 2), 0.01)
    w = tg.add(TTensor("w", (3, 1, 1, 2), "int8", data=np.ones((3, 1, 1, 2), np.int8),
                       quant=QParams(np.full(3, 0.01, np.float32), np.zeros(3, np.int64), 0)))
    bias_scale = np.full(3, np.float32(0.01) * np.float32(0.01), np.float32)
    b = tg.add(TTensor("b", (3,), "int32", data=np.zeros(3, np.int32),
                       quant=QParams(bias_scale, np.zeros(3, np.int64), 0)))
    y = _act(tg, "y", (1, 4, 4, 3), 1e-4 / multiplier)
    options = schema.Conv2DOptionsT()
    options.padding, options.strideW, options.strideH = schema.Padding.VALID, 1, 1
    tg.ops.append(TOp("CONV_2D", [x, w, b], [y], options, "conv_node"))
    tg.inputs, tg.outputs = [x], [y]
    return tg


def logistic_graph(scale):
    tg = TGraph()
    x, y = _act(tg, "x", (1, 4), 0.05), _act(tg, "y", (1, 4), scale, -128)
    tg.ops.append(TOp("LOGISTIC", [x], [y], None, "sigmoid_node"))
    tg.inputs, tg.outputs = [x], [y]
    return tg


def add_graph(out_scale):
    tg = TGraph()
    a, b, y = _act(tg, "a", (1, 4), 0.01), _act(tg, "b", (1, 4), 0.01), _act(tg, "y", (1, 4), out_scale)
    tg.ops.append(TOp("ADD", [a, b], [y], schema.AddOptionsT(), "add_node"))
    tg.inputs, tg.outputs = [a, b], [y]
    return tg


def unchecked(tg, monkeypatch) -> bytes:
    monkeypatch.setattr(writer, "check_int8", lambda tg: None)
    return writer.serialize(tg)


def loads(flat: bytes, use_xnnpack: bool) -> bool:
    try:
        make_interpreter(flat, use_xnnpack=use_xnnpack).invoke()
        return True
    except Exception:      # noqa: BLE001  (any refusal counts; the test states which one)
        return False


def conv_with_weight_scales(count, axis=0):
    tg = conv_graph(1.0)
    tg.tensors[1].quant = QParams(np.full(count, 0.01, np.float32), np.zeros(count, np.int64), axis)
    return tg


BROKEN = [  # (graph, loader that refuses it, words the error names)
    (lambda: concat_graph(ULP_UP), "reference", ["CONCATENATION", "concat_node", "'b'", "'y'", "0x"]),
    (lambda: concat_graph(0.05, 3), "reference", ["zero point 3"]),
    (lambda: conv_graph(300.0), "xnnpack", ["CONV_2D", "conv_node", "multiplier 300"]),
    (lambda: conv_graph(6.6e6), "xnnpack", ["multiplier 6.6e+06"]),
    (lambda: logistic_graph(1 / 255), "reference", ["LOGISTIC", "sigmoid_node", "requires 0.00390625"]),
    (lambda: conv_with_weight_scales(2), "reference", ["weights 'w'", "2 scales along axis 0"]),
    (lambda: conv_with_weight_scales(3, axis=3), "xnnpack", ["along axis 3", "along axis 0"]),
]


@pytest.mark.parametrize("make,refused_by,words", BROKEN)
def test_checker_refuses_what_litert_refuses(make, refused_by, words, monkeypatch):
    with pytest.raises(Int8ParamsError) as err:
        writer.serialize(make())
    assert err.value.code == "convert.int8_params"
    for word in words:
        assert word in str(err.value), str(err.value)
    assert not loads(unchecked(make(), monkeypatch), use_xnnpack=refused_by == "xnnpack")


@pytest.mark.parametrize("make", [concat_graph, lambda: conv_graph(200.0), lambda: logistic_graph(1 / 256)])
def test_checker_passes_what_litert_loads(make):
    flat = writer.serialize(make())
    check_flatbuffer(flat)
    assert loads(flat, use_xnnpack=True) and loads(flat, use_xnnpack=False)


def test_add_with_a_tiny_output_scale_is_refused_before_it_aborts_the_process(monkeypatch, tmp_path):
    with pytest.raises(Int8ParamsError, match="ADD.*add_node.*multiplier"):
        writer.serialize(add_graph(0.01 / 2e6))
    path = tmp_path / "add.tflite"
    path.write_bytes(unchecked(add_graph(0.01 / 2e6), monkeypatch))
    code = "from core.litert import make_interpreter; make_interpreter(open(%r, 'rb').read())" % str(path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode != 0          # SIGABRT in add.cc's Prepare: no Python error to catch


def test_hand_broken_flatbuffer_one_ulp():
    """A converted concat, one input scale moved by one float32 ULP: checker and LiteRT refuse."""
    nodes, inits = branches_of_different_ranges()
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    q = H.convert(m, "int8", samples=H.samples_for(m, 8), io="int8")
    check_flatbuffer(q.flatbuffer)
    model = schema.ModelT.InitFromPackedBuf(q.flatbuffer, 0)
    sub = model.subgraphs[0]
    concat = next(op for op in sub.operators
                  if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONCATENATION)
    quant = sub.tensors[concat.inputs[0]].quantization
    quant.scale = [float(np.nextafter(np.float32(quant.scale[0]), np.float32(1)))]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    broken = bytes(builder.Output())
    with pytest.raises(Int8ParamsError, match="CONCATENATION"):
        check_flatbuffer(broken)
    assert not loads(broken, use_xnnpack=False) and not loads(broken, use_xnnpack=True)
