"""Per-opcode int8 rules, as data, from the TFLite int8 quantization spec.

https://www.tensorflow.org/lite/performance/quantization_spec (and the kernels it cites):

* ``INT8_OPS``      opcodes with an int8 kernel in the builtin resolver; anything else runs as a
                    float island (DEQUANTIZE before, QUANTIZE after).
* ``SAME_PARAMS``   kernels that require input(s) and output to share scale and zero point
                    (they move or compare bytes without rescaling).
* ``FIXED_OUTPUT``  kernels whose int8 output parameters are fixed by their lookup tables.
* ``WEIGHTS``       (input index of the filter, its per-channel axis, input index of the bias):
                    weights per-channel symmetric int8 (zero point 0, [-127, 127]); bias int32 with
                    scale = input_scale * weight_scale[c].
"""
from __future__ import annotations

INT8_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
    "ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM",
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN",
    "RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE",
    "PAD", "PADV2", "MIRROR_PAD", "GATHER", "SQUEEZE", "BROADCAST_TO",
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "ELU",
    "LOGISTIC", "TANH", "HARD_SWISH", "GELU", "SOFTMAX", "LOG_SOFTMAX", "RSQRT", "ABS",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
}

SAME_PARAMS = {
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V",
    "STRIDED_SLICE", "SLICE", "PAD", "PADV2", "MIRROR_PAD", "GATHER", "SQUEEZE", "REDUCE_MAX",
    "REDUCE_MIN", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "MAXIMUM", "MINIMUM",
    "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BROADCAST_TO",
}

# Which inputs of a SAME_PARAMS op carry data (the rest are shapes/axes or scalars that share).
DATA_INPUTS = {"SPLIT": (1,), "CONCATENATION": None}   # None: all inputs; default: input 0

FIXED_OUTPUT = {
    "LOGISTIC": (1.0 / 256, -128),
    "SOFTMAX": (1.0 / 256, -128),
    "TANH": (1.0 / 128, 0),
    "LOG_SOFTMAX": (16.0 / 256, 127),
}

WEIGHTS = {
    "CONV_2D": (1, 0, 2),
    "DEPTHWISE_CONV_2D": (1, 3, 2),
    "FULLY_CONNECTED": (1, 0, 2),
    "TRANSPOSE_CONV": (1, 0, 3),
}


def data_inputs(opcode: str, inputs: list[int]) -> list[int]:
    """The input positions of ``opcode`` that hold activation data (not shapes/axes/weights)."""
    if opcode in DATA_INPUTS:
        spec = DATA_INPUTS[opcode]
        return list(range(len(inputs))) if spec is None else list(spec)
    if opcode == "TRANSPOSE_CONV":
        return [2]
    if opcode in WEIGHTS:
        return [0]
    if opcode in ("ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "BATCH_MATMUL",
                  "PRELU"):
        return [0, 1]
    if opcode == "PADV2":
        return [0, 2]
    return [0]
