"""Which ONNX ops the QDQ writer quantizes, and how: the tables, as data.

    ACTIVATION_INPUTS  op -> indexes of inputs that carry activations (None: every input);
                       each such input gets DequantizeLinear(QuantizeLinear(x)) in front of the op
    WEIGHT_AXIS        op -> {input index: function(node) -> per-channel axis} for weights
                       stored as initializers (DequantizeLinear of an int8 initializer)
    BIAS_INPUT         op -> index of its bias input (int32 or float, per profile)
    SAME_SCALE         ops that only move or select values: their output reuses the input's
                       range, so ONNX Runtime can drop the Q/DQ around them and stay in int8
    FUSED_ACTIVATION   activations TensorRT and ONNX Runtime fold into the producing op: the
                       tensor between (e.g.) Conv and Relu gets no Q/DQ, like TFLite's fused ops

Ops not listed stay float; their float outputs are still quantized where a listed op reads them.
LSTM, GRU and RNN are deliberately not listed: onnxruntime has no static int8 recurrent kernel
(only com.microsoft.DynamicQuantizeLSTM) and TensorRT's explicit quantization takes no int8
recurrent layer, so they run float between quantized neighbours (tests/converters/test_qdq_recurrent.py).
"""
from __future__ import annotations

ACTIVATION_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0,), "ConvTranspose": (0,), "Gemm": (0, 1), "MatMul": (0, 1),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Concat": None,
    "MaxPool": (0,), "AveragePool": (0,), "GlobalAveragePool": (0,), "ReduceMean": (0,),
    "Relu": (0,), "Clip": (0,), "LeakyRelu": (0,), "PRelu": (0,), "Sigmoid": (0,), "Tanh": (0,),
    "HardSigmoid": (0,), "HardSwish": (0,), "Softmax": (0,),
    "Reshape": (0,), "Flatten": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "Resize": (0,), "Slice": (0,), "Split": (0,), "Pad": (0,),
}


def _gemm_axis(node) -> int:
    # Gemm's B is [K, N], or [N, K] when transB=1: the output channel is N.
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


WEIGHT_AXIS = {
    "Conv": {1: lambda node: 0},              # W [M, C/group, kH, kW]: output channel first
    "ConvTranspose": {1: lambda node: 1},     # W [C, M/group, kH, kW]: output channel second
    "Gemm": {1: _gemm_axis},
    "MatMul": {1: lambda node: -1},           # B [K, N] (per tensor when batched, see builder)
}

BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}

# The tensorrt profile quantizes what TensorRT's Q/DQ placement recommendations ask for: the
# inputs of weighted ops (their outputs are not quantized; TensorRT fuses the bias, BatchNorm,
# activations such as Relu/SiLU and a residual Add into the int8 kernel and writes int8 only where
# the next Q asks; every other op runs in float or fp16), plus the residual input of an Add that
# is int8 anyway (builder: for the Conv+Add fusion). Each tensor is rounded once, before the
# layer that reads it, instead of once per elementwise op on the way (a SiLU was three roundings).
# https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html
# ("Q/DQ Layer-Placement Recommendations")
TENSORRT_INPUTS: dict[str, tuple[int, ...]] = {"Conv": (0,), "ConvTranspose": (0,), "Gemm": (0, 1), "MatMul": (0, 1)}

SAME_SCALE = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                        "Slice", "Split", "Resize"})

FUSED_ACTIVATION = frozenset({"Relu", "Clip"})
FUSING_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"})


def activation_inputs(node) -> range | tuple[int, ...]:
    indexes = ACTIVATION_INPUTS.get(node.op_type, ())
    return range(len(node.input)) if indexes is None else indexes
