"""Operator versions: the ``version`` each OperatorCode declares, as the TFLite converter declares it.

A TFLite op's version says which variant of its kernel the model needs (int8 inputs, no bias, a
keep_num_dims flag, ...), so a runtime that lacks the variant refuses the model at load time
instead of computing with the wrong kernel. LiteRT registers each builtin for a range of versions
and runs the same kernel for all of them, so version 1 everywhere loads and runs today, but it
states a float kernel for an int8 op: a stricter runtime, an accelerator compiler or a model
checker reads it as such, and an op list diffed against TensorFlow's output differs for no reason.

The rules follow the int8 cases of ``tensorflow/lite/tools/versioning/op_version.cc``
(GetBuiltinOperatorVersion); an op or a variant not listed keeps version 1, as before.

    op_version(tg, op) -> int
"""
from __future__ import annotations

from converters.tgraph import TGraph, TOp

# Version of an op whose data input (index 0, SPLIT: 1) is int8, when no special case below applies.
INT8 = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "TRANSPOSE_CONV": 2,
    "ADD": 2, "SUB": 2, "MUL": 2, "MAXIMUM": 2, "MINIMUM": 2,
    "PAD": 2, "PADV2": 2, "MIRROR_PAD": 2, "CONCATENATION": 2, "TRANSPOSE": 2, "STRIDED_SLICE": 2,
    "SLICE": 2, "GATHER": 2, "PACK": 2, "SPLIT": 2, "SPACE_TO_BATCH_ND": 2, "BATCH_TO_SPACE_ND": 2,
    "MEAN": 2, "SOFTMAX": 2, "REDUCE_MAX": 2, "REDUCE_MIN": 2, "RELU": 2, "RELU6": 2, "RSQRT": 2,
    "LOGISTIC": 2, "TANH": 2, "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2,
    "RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 2, "DEQUANTIZE": 2, "ARG_MAX": 2, "ARG_MIN": 2,
}
DATA_INPUT = {"SPLIT": 1}              # SPLIT's input 0 is the axis
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")   # the int8 variant needs int8 weights too
RANK5 = {"TRANSPOSE": 4, "PAD": 4, "PADV2": 4}                    # a rank above 4 is its own variant
RESIZE = {"RESIZE_BILINEAR": ("halfPixelCenters",),                # coordinate modes of their own, any type
          "RESIZE_NEAREST_NEIGHBOR": ("halfPixelCenters", "alignCorners")}


def op_version(tg: TGraph, op: TOp) -> int:
    """The version ``op`` declares (module doc)."""
    dtype = _dtype(tg, op.inputs, DATA_INPUT.get(op.opcode, 0))
    if op.opcode == "BROADCAST_TO":
        return 2                         # version 1 was TF's custom op: the builtin starts at 2, any type
    if op.opcode in RANK5 and _rank(tg, op.inputs[0]) > 4:
        return RANK5[op.opcode]
    if op.opcode == "FULLY_CONNECTED" and dtype in ("int8", "float32") and dtype == _dtype(tg, op.inputs, 1):
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return 6                     # no bias: a variant of its own, float or int8
        if getattr(op.options, "keepNumDims", False):
            return 5
    if op.opcode in RESIZE and any(getattr(op.options, flag, False) for flag in RESIZE[op.opcode]):
        return 3
    if dtype != "int8" or op.opcode not in INT8:
        return 1
    if op.opcode in WEIGHTED and (_dtype(tg, op.inputs, 1), _dtype(tg, op.outputs, 0)) != ("int8", "int8"):
        return 1                         # a float, hybrid or int32-output layer
    return INT8[op.opcode]


def _dtype(tg: TGraph, indices: list[int], k: int) -> str | None:
    return tg.tensors[indices[k]].dtype if k < len(indices) and indices[k] >= 0 else None


def _rank(tg: TGraph, index: int) -> int:
    return len(tg.tensors[index].shape) if index >= 0 else 0
