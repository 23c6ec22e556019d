"""Single-op TFLite graphs for bench/op_bench.py, written directly as a TGraph (no converter
choices involved): a conv layer (``Layer``: 3x3 or 1x1, depthwise or not, int8 in every form that
could matter) or another MobileNetV2 op (``OpCase``: residual ADD, MEAN, FULLY_CONNECTED, the
input edge). ``build`` / ``build_case`` return the flatbuffer of the float32 or int8 version.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import converters.tflite  # noqa: E402,F401  (imports the lowering package in the right order)
from converters.lower.context import options  # noqa: E402
from converters.tgraph import QParams, TGraph, TOp, TTensor  # noqa: E402
from converters.tflite.writer import serialize  # noqa: E402
import ai_edge_litert.schema_py_generated as schema  # noqa: E402

RELU6 = schema.ActivationFunctionType.RELU6
NONE = schema.ActivationFunctionType.NONE


@dataclass(frozen=True)
class Layer:
    """One conv layer: NHWC input [1, h, w, cin], k x k kernel, depthwise when ``dw``."""
    h: int
    w: int
    cin: int
    cout: int
    k: int
    stride: int
    dw: bool
    relu6: bool = True
    per_tensor: bool = False         # int8 weights: one scale (QS8) instead of per-channel (QC8)
    explicit_pad: bool = False       # PAD op + VALID instead of SAME
    in_zp: int = -128                # int8 input zero point (-128: the input came from a ReLU6)
    island: bool = False             # int8 I/O, float compute: DEQUANTIZE -> float op -> QUANTIZE

    @property
    def label(self) -> str:
        kind = "dw" if self.dw else ("pw" if self.k == 1 else f"conv{self.k}x{self.k}")
        flags = [f"s{self.stride}", "relu6" if self.relu6 else "linear",
                 "per-tensor" if self.per_tensor else "per-channel"]
        if self.explicit_pad:
            flags.append("PAD+VALID")
        if self.in_zp != -128:
            flags.append(f"in_zp={self.in_zp}")
        if self.island:
            flags.append("float-island")
        return f"{kind} {self.h}x{self.w}x{self.cin}->{self.cout} " + " ".join(flags)

    def out_hw(self) -> tuple[int, int]:
        return -(-self.h // self.stride), -(-self.w // self.stride)


# --- graph construction -----------------------------------------------------------------------
def build(layer: Layer, int8: bool, seed: int = 0) -> bytes:
    """A one-op (or PAD + op) TFLite model for ``layer`` in float32 or int8."""
    rng = np.random.default_rng(seed)
    tg = TGraph()
    dtype = "int8" if int8 else "float32"
    act_in = QParams.per_tensor(6.0 / 255, layer.in_zp) if int8 else None
    x = tg.add(TTensor("x", (1, layer.h, layer.w, layer.cin), dtype, quant=act_in))
    tg.inputs = [x]
    oh, ow = layer.out_hw()
    out_q = (QParams.per_tensor(6.0 / 255, -128) if layer.relu6 else QParams.per_tensor(0.05, 3)) if int8 else None
    y = tg.add(TTensor("y", (1, oh, ow, layer.cout), dtype, quant=out_q))
    tg.outputs = [y]
    requantize = None
    if int8 and layer.island:     # the op itself runs in float between two conversions
        x = _convert(tg, "DEQUANTIZE", x, "float32", (1, layer.h, layer.w, layer.cin))
        y_float = tg.add(TTensor("y_float", (1, oh, ow, layer.cout), "float32"))
        requantize = TOp("QUANTIZE", [y_float], [y])
        y, int8, dtype, act_in = y_float, False, "float32", None
    src, mode = x, schema.Padding.SAME
    if layer.explicit_pad and layer.k > 1:
        src, mode = _pad(tg, layer, x, dtype, act_in), schema.Padding.VALID
    filt, bias = _weights(tg, layer, rng, int8, act_in)
    act = RELU6 if layer.relu6 else NONE
    if layer.dw:
        opts = options("DepthwiseConv2DOptions", padding=mode, strideH=layer.stride, strideW=layer.stride,
                       dilationHFactor=1, dilationWFactor=1, depthMultiplier=1, fusedActivationFunction=act)
        tg.ops.append(TOp("DEPTHWISE_CONV_2D", [src, filt, bias], [y], opts))
    else:
        opts = options("Conv2DOptions", padding=mode, strideH=layer.stride, strideW=layer.stride,
                       dilationHFactor=1, dilationWFactor=1, fusedActivationFunction=act)
        tg.ops.append(TOp("CONV_2D", [src, filt, bias], [y], opts))
    if requantize is not None:
        tg.ops.append(requantize)
    return serialize(tg, description="op_bench")


def _convert(tg: TGraph, opcode: str, src: int, dtype: str, shape) -> int:
    out = tg.add(TTensor(f"{tg.tensors[src].name}_{dtype}", shape, dtype))
    tg.ops.append(TOp(opcode, [src], [out]))
    return out


def _pad(tg: TGraph, layer: Layer, x: int, dtype: str, q) -> int:
    """ONNX-style symmetric pads k//2 on both sides (not TFLite SAME at stride 2)."""
    p = layer.k // 2
    padded = tg.add(TTensor("x_padded", (1, layer.h + 2 * p, layer.w + 2 * p, layer.cin), dtype, quant=q))
    table = tg.add(TTensor("paddings", (4, 2), "int32",
                           data=np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32)))
    tg.ops.append(TOp("PAD", [x, table], [padded], schema.PadOptionsT()))
    # With k=3 and an even size, VALID on the padded map gives SAME's output size at stride 1 and 2.
    return padded


def _weights(tg: TGraph, layer: Layer, rng, int8: bool, act_in) -> tuple[int, int]:
    shape = (1, layer.k, layer.k, layer.cout) if layer.dw else (layer.cout, layer.k, layer.k, layer.cin)
    axis = 3 if layer.dw else 0
    w = rng.normal(0, 0.2, shape).astype(np.float32)
    b = rng.normal(0, 0.1, layer.cout).astype(np.float32)
    if not int8:
        return (tg.add(TTensor("filter", shape, "float32", data=w)),
                tg.add(TTensor("bias", (layer.cout,), "float32", data=b)))
    n = 1 if layer.per_tensor else layer.cout
    w_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
    wq = QParams(w_scale, np.zeros(n, np.int64), axis)
    filt = tg.add(TTensor("filter", shape, "int8", data=rng.integers(-127, 128, shape, dtype=np.int8), quant=wq))
    b_scale = (act_in.scale[0] * w_scale).astype(np.float32)
    bq = QParams(b_scale, np.zeros(n, np.int64), 0)
    bias = tg.add(TTensor("bias", (layer.cout,), "int32",
                          data=rng.integers(-2000, 2000, layer.cout).astype(np.int32), quant=bq))
    return filt, bias


@dataclass(frozen=True)
class OpCase:
    """A non-conv op of the network: residual ADD, global MEAN, the classifier FULLY_CONNECTED
    (with the output DEQUANTIZE in int8), or the input edge (TRANSPOSE; int8: QUANTIZE first)."""
    kind: str                        # add | mean | fc | input
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.kind} {'x'.join(map(str, self.shape))}"


def build_case(case: OpCase, int8: bool) -> bytes:
    tg = TGraph()
    dt = "int8" if int8 else "float32"
    q = (lambda s, z: QParams.per_tensor(s, z)) if int8 else (lambda s, z: None)
    if case.kind == "input":
        n, c, h, w = case.shape
        x = tg.add(TTensor("x", case.shape, "float32"))
        src = x
        if int8:
            src = tg.add(TTensor("x_q", case.shape, "int8", quant=q(0.03, 0)))
            tg.ops.append(TOp("QUANTIZE", [x], [src]))
        y = tg.add(TTensor("y", (n, h, w, c), dt, quant=q(0.03, 0)))
        perm = tg.add(TTensor("perm", (4,), "int32", data=np.array([0, 2, 3, 1], np.int32)))
        tg.ops.append(TOp("TRANSPOSE", [src, perm], [y], schema.TransposeOptionsT()))
    elif case.kind == "add":
        x = tg.add(TTensor("x", case.shape, dt, quant=q(0.04, 8)))
        b = tg.add(TTensor("b", case.shape, dt, quant=q(0.012, 10)))
        y = tg.add(TTensor("y", case.shape, dt, quant=q(0.045, 5)))
        tg.ops.append(TOp("ADD", [x, b], [y], options("AddOptions")))
        tg.inputs = [x, b]
    elif case.kind == "mean":
        x = tg.add(TTensor("x", case.shape, dt, quant=q(6 / 255, -128)))
        y = tg.add(TTensor("y", (1, 1, 1, case.shape[-1]), dt, quant=q(6 / 255, -128)))
        axes = tg.add(TTensor("axes", (2,), "int32", data=np.array([1, 2], np.int32)))
        tg.ops.append(TOp("MEAN", [x, axes], [y], options("ReducerOptions", keepDims=True)))
    elif case.kind == "fc":
        x, y = _fc(tg, case.shape, int8)
    else:
        raise ValueError(case.kind)
    tg.inputs = tg.inputs or [x]
    tg.outputs = [y]
    return serialize(tg, description="op_bench")


def _fc(tg: TGraph, shape, int8: bool) -> tuple[int, int]:
    cin, cout = shape
    rng = np.random.default_rng(0)
    if not int8:
        x = tg.add(TTensor("x", (1, cin)))
        y = tg.add(TTensor("y", (1, cout)))
        w = tg.add(TTensor("w", (cout, cin), data=rng.normal(0, 0.05, (cout, cin)).astype(np.float32)))
        b = tg.add(TTensor("b", (cout,), data=np.zeros(cout, np.float32)))
        tg.ops.append(TOp("FULLY_CONNECTED", [x, w, b], [y], options("FullyConnectedOptions")))
        return x, y
    x = tg.add(TTensor("x", (1, cin), "int8", quant=QParams.per_tensor(6 / 255, -128)))
    yq = tg.add(TTensor("y_q", (1, cout), "int8", quant=QParams.per_tensor(0.1, 0)))
    y = tg.add(TTensor("y", (1, cout)))
    scale = rng.uniform(0.001, 0.01, cout).astype(np.float32)
    w = tg.add(TTensor("w", (cout, cin), "int8", data=rng.integers(-127, 128, (cout, cin), dtype=np.int8),
                       quant=QParams(scale, np.zeros(cout, np.int64), 0)))
    b = tg.add(TTensor("b", (cout,), "int32", data=np.zeros(cout, np.int32),
                       quant=QParams((scale * 6 / 255).astype(np.float32), np.zeros(cout, np.int64), 0)))
    tg.ops.append(TOp("FULLY_CONNECTED", [x, w, b], [yq], options("FullyConnectedOptions")))
    tg.ops.append(TOp("DEQUANTIZE", [yq], [y]))
    return x, y
