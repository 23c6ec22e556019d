"""Per-channel means of the tensors that layers with weights read, gathered in the float pass.

Bias correction (``tflite/quantize.py``) needs, for each convolution or fully-connected layer,
the mean of each input channel over the calibration samples. They used to come from a second
float pass in LiteRT (the float TFLite model run on every sample again, each watched tensor
copied out and averaged in NumPy: half of a 640x640 detector's conversion time). Here they come
from the onnxruntime pass that already runs for the ranges: a ``ReduceMean`` over every axis but
the channel axis, appended after the tensor's producer (``runner.expose``), hands back one small
vector per tensor and sample.

    channel_axes(model, observed) -> {name: (axis, rank)}   which tensors, which ONNX axis is the channel
    ChannelMeans                                 the running mean of those vectors over samples
    range_axes(model, observed) -> {name: (axis, rank)}     tensors whose range is kept per channel
    ChannelRanges                                the running per-channel min and max

A BatchNormalization that follows no layer becomes a per-channel MUL then ADD (``fuse_conv_bn``);
the range of the MUL's output is exact from the input's per-channel min and max (each channel is
scaled by one number), which the pass gets from ReduceMin/ReduceMax over every axis but the
channel (the same work as over every axis): no LiteRT pass for PP-OCR's or DenseNet's BNs.

The channel axis follows the ONNX op that reads the tensor (the TFLite layer it becomes reads
the same values in channels-last order): ``Conv``/``ConvTranspose`` input 0 -> axis 1 (NCHW),
``Gemm`` input A -> axis 1 (axis 0 with ``transA``), ``MatMul`` input A -> its last axis.
A layer input that is none of these (a lowering's own PAD or RESHAPE in front of the layer is
followed back to one, ``tflite/onnx_stats.py``) is measured in LiteRT as before.
"""
from __future__ import annotations

import numpy as np
import onnx

# ONNX op -> (data input, channel axis: an int, or "transA" for Gemm's flag)
LAYER_INPUTS = {"Conv": (0, 1), "ConvTranspose": (0, 1), "Gemm": (0, "transA"), "MatMul": (0, -1)}


def ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor whose shape inference recorded one, by name."""
    g = model.graph
    return {vi.name: len(vi.type.tensor_type.shape.dim)
            for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.HasField("shape")}


def channel_axes(model: onnx.ModelProto, observed: set[str]) -> dict[str, tuple[int, int]]:
    """{tensor: (channel axis >= 0, rank)} for the data inputs of the layers with weights (module doc)
    among ``observed`` (the float tensors the pass runs over), when their rank is known (from
    shape inference, else from the layer: Gemm reads a matrix, a Conv its weights' rank)."""
    rank = ranks(model)
    weight_rank = {init.name: len(init.dims) for init in model.graph.initializer}
    sources = identity_sources(model)
    found: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in LAYER_INPUTS:
            continue
        pos, layer_axis = LAYER_INPUTS[node.op_type]
        read = node.input[pos] if len(node.input) > pos else ""
        if read not in rank:
            rank[read] = 2 if node.op_type == "Gemm" else weight_rank.get(node.input[1], 0) if node.op_type != "MatMul" else 0
        for name in through_copies(read, sources):
            rank.setdefault(name, rank[read])
            if name not in observed or rank[name] < 1:
                continue
            axis = layer_axis
            if axis == "transA":
                trans = next((a.i for a in node.attribute if a.name == "transA"), 0)
                axis = 0 if trans else 1
            axis = axis % rank[name]
            if found.setdefault(name, axis) != axis:      # read along two axes: leave it to LiteRT
                found[name] = -1
    return {name: (axis, rank[name]) for name, axis in found.items() if axis >= 0}


def identity_sources(model: onnx.ModelProto) -> dict[str, str]:
    """{Identity output: its input}. The frontend drops Identity nodes and their readers read the
    input instead, so the TFLite layer's input tensor carries the *input's* name: its statistics
    must be gathered under that name too (PP-OCR's Paddle exports put an Identity before every
    Conv; their means were all missing, and LiteRT ran a second float pass over every sample
    for them: 44 of 318 s converting PP-OCRv6 det, and that step's 590 MB peak)."""
    return {n.output[0]: n.input[0] for n in model.graph.node
            if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and n.input and n.output}


def through_copies(name: str, sources: dict[str, str]) -> list[str]:
    """``name`` and the tensors it copies through Identity nodes (``identity_sources``), nearest first."""
    names = [name]
    while names[-1] in sources and sources[names[-1]] not in names:
        names.append(sources[names[-1]])
    return names


class ChannelMeans:
    """Running mean over samples of each tensor's per-sample channel means. A tensor whose means
    are not finite in some sample (a NaN or Inf in the activations) gets none: no correction is
    better than a NaN bias."""

    def __init__(self):
        self.sums: dict[str, np.ndarray] = {}
        self.bad: set[str] = set()
        self.count = 0

    def update(self, values: dict[str, np.ndarray]) -> None:
        """One sample's {tensor: channel-mean vector}."""
        for name, value in values.items():
            value = np.asarray(value, np.float64).reshape(-1)
            if not np.isfinite(value).all():
                self.bad.add(name)
            elif name in self.sums and len(self.sums[name]) != len(value):
                self.bad.add(name)                     # channel count varies between samples
            else:
                self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def means(self, axes: dict[str, tuple[int, int]]) -> dict[tuple[str, int], np.ndarray]:
        """{(tensor, channel axis): mean per channel} over the samples seen; ``axes`` as
        ``channel_axes`` returns them."""
        return {(name, axes[name][0]): total / self.count for name, total in self.sums.items()
                if name not in self.bad}


def range_axes(model: onnx.ModelProto, observed: set[str]) -> dict[str, tuple[int, int]]:
    """{tensor: (channel axis 1, rank)}: the inputs of BatchNormalization nodes among ``observed``."""
    rank, sources = ranks(model), identity_sources(model)
    return {name: (1, rank[name]) for node in model.graph.node
            if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
            for name in through_copies(node.input[0], sources)
            if name in observed and rank.get(name, 0) >= 2}


class ChannelRanges:
    """Running per-channel (min, max) of each tensor, from one sample's vectors at a time; a
    tensor with a non-finite value in some sample gets none (the whole tensor's range is then
    computed by the exact path, ``runner.Fetcher``)."""

    def __init__(self):
        self.lo: dict[str, np.ndarray] = {}
        self.hi: dict[str, np.ndarray] = {}
        self.bad: set[str] = set()

    def update(self, name: str, lo: np.ndarray, hi: np.ndarray) -> None:
        lo, hi = np.asarray(lo, np.float32).reshape(-1), np.asarray(hi, np.float32).reshape(-1)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or len(self.lo.get(name, lo)) != len(lo):
            self.bad.add(name)
        elif name in self.lo:
            self.lo[name], self.hi[name] = np.minimum(self.lo[name], lo), np.maximum(self.hi[name], hi)
        else:
            self.lo[name], self.hi[name] = lo, hi

    def ranges(self, axes: dict[str, tuple[int, int]]) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """{(tensor, channel axis): (min per channel, max per channel)}."""
        return {(name, axes[name][0]): (self.lo[name], self.hi[name]) for name in self.lo if name not in self.bad}
