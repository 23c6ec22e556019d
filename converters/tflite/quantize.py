"""Full-integer int8 quantization of a lowered (float) TGraph, following the TFLite int8 spec.

* activations: per-tensor asymmetric int8 from their range, widened to include 0 (so that zero
  padding and ReLU are exact);
* weights: per-channel symmetric int8, zero point 0, values in [-127, 127] (``rules.WEIGHTS``);
* bias: int32, zero point 0, scale = input_scale * weight_scale[c]; with ``input_means`` (each
  channel's mean of a layer's float input over the calibration samples; ``BIAS_CORRECTED``
  layers, depthwise ones excluded) the bias is first
  corrected for the weights' rounding error: b -= (W_int8 * scale - W) . mean(x) per output channel
  (empirical bias correction, Nagel et al. 2019, "Data-Free Quantization Through Weight
  Equalization and Bias Correction", section 4.2). Rounding error does not average out: each
  channel's is a fixed offset times the input's mean, and ReLU inputs have large means;
  measured: +3.8 dB SQNR on the bench MobileNetV2, +1.8 on ResNet-tiny, +5.3 on the digits CNN;
* other constant operands (ADD/MUL/PRELU...): per-tensor asymmetric from their own min/max;
* ``rules.SAME_PARAMS`` ops share one set of parameters between their data inputs and outputs,
  ``rules.FIXED_OUTPUT`` ops get the parameters their lookup tables assume (``ties.py``: one
  union-find over every tie, a requantize where a fixed source meets free ones, one float32
  ``QParams`` object per group); degenerate ranges get scales the kernels accept (``params.py``);
  ``check.check_int8`` verifies all of it bit by bit when the model is written.

An op without an int8 kernel, named in ``keep_float``, or touching a tensor without a range stays
float: DEQUANTIZE before it, QUANTIZE after it (a "float island"). Pure data movement (TRANSPOSE,
PAD, RESHAPE, ...) whose every reader is float joins the island (``_demote_float_feeders``): moving
float bytes is exact, and it saves a QUANTIZE -> int8 move -> DEQUANTIZE round trip (e.g. the
input TRANSPOSE and PAD in front of a stem convolution kept in float). Two more rules keep float
values float where they already are (``_float_regions``): data movement of a float tensor that a
float op reads too (a recurrent layer's new state, read by the next layer and written to the state
output), and cheap arithmetic (ADD, MUL, MEAN, ...) whose producers and readers are all float ops (a
spectrogram's ``re^2 + im^2`` between float squares and a float SQRT). The linear DSP from the graph
input to a LOG (a log-mel front end) is float too (``log_domain``); a magnitude spectrum's STFT,
``sqrt(re^2 + im^2)`` and the layer that reads it come in ``keep_float`` (``spectrum.py``).
A float graph input that packs parts of very different ranges is sliced in float, each part then
quantized on its own (``_float_input_slices``).
"""
from __future__ import annotations

import numpy as np

from converters.errors import ConvertError
from converters.tflite import io_edges, log_domain, saturate, ties
from converters.tflite.params import activation_params  # noqa: F401  (the public name, re-exported)
from converters.tflite.params import assign as assign_params
from converters.tflite.rules import FIXED_OUTPUT, INT8_OPS, SAME_PARAMS, WEIGHTS, data_inputs
from converters.tflite.weights import per_channel_int8
from converters.tgraph import QParams, TGraph, TOp, TTensor


# DEPTHWISE_CONV_2D is left out: correcting it cost the zoo's depthwise nets held-out SQNR
# (ocr_cls_mbv3 30.9 -> 28.9 dB, EfficientNet-B0 9.2 -> 8.7; docs/quantization.md "Bias correction")
BIAS_CORRECTED = ("CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
PRODUCT_MIN = float(np.finfo(np.float32).tiny) * 2.0 ** 24   # input x weight scale: a normal float32, with room
BIAS_INT_LIMIT = 2.0 ** 30      # int32 bias magnitude the floor allows (2^31 - 1, halved for bias correction)


def quantize_int8(tg: TGraph, ranges: dict[int, tuple], *, io: str = "float32",
                  keep_float: frozenset = frozenset(), input_means: dict | None = None) -> None:
    _clone_shared_constants(tg)
    int8_ops = {id(op) for op in tg.ops if _can_be_int8(tg, op, ranges, keep_float)}
    log_domain.float_front_ends(tg, int8_ops)          # a log-spectrogram's DSP stays float
    if io == "float32":
        _float_output_joins(tg, int8_ops, ranges)
        _float_input_slices(tg, int8_ops, ranges)
        io_edges.float_input_transposes(tg, int8_ops)
    _demote_float_feeders(tg, int8_ops)
    _float_regions(tg, int8_ops, io)
    ranges = saturate.narrow(tg, ranges, int8_ops)      # steps only where readers see them
    domain = io_edges.initial_domains(tg, int8_ops, io)
    io_edges.insert_conversions(tg, int8_ops, domain, ranges)
    ties.cut_fixed_conflicts(tg, int8_ops, domain, ranges)
    requants = {id(op) for op in tg.ops if op.opcode == "QUANTIZE" and op.inputs[0] in domain
                and domain[op.inputs[0]] == "int8"}
    int8_ops |= requants          # int8 -> int8 requantizes: producers for the degenerate floors
    _saturate_addends(tg, int8_ops, ranges)
    params = _assign(tg, int8_ops, domain, ranges, ties.tie_groups(tg, int8_ops, domain))
    originals: dict[int, np.ndarray] = {}     # float weights, by tensor, for shared weights
    for index, q in params.items():
        tg.tensors[index].dtype = "int8"
        tg.tensors[index].quant = q
    means = _through_conversions(tg, input_means or {})
    for op in tg.ops:
        if id(op) in int8_ops:
            _quantize_constants(tg, op, params, means, originals)
    io_edges.finish_io(tg, io, ranges)


def rounded_tensors(tg: TGraph, keep_float: frozenset, named: set[str]) -> set[int]:
    """Tensors of ``tg`` (a lowered copy: constants are cloned) whose values int8 rounds whatever
    the ranges, for ``auto``'s scorer (``tflite.int8_view``), which must not round what LiteRT keeps
    float: ``quantize_int8``'s float islands that follow from the ops alone (ops without an int8
    kernel, ``keep_float``, log front ends, ``_float_regions``) are left out, every tensor taken as
    calibrated. A lowering temporary an int8 op writes (a Conv1d's 2-D output) passes its rounding
    on through float data movement to the first tensor in ``named`` (the ONNX one the scorer
    rounds). Rounding what LiteRT keeps float charged every candidate with noise the model never
    has: silero VAD's LSTM state (fed back call after call) and its float STFT magnitude."""
    _clone_shared_constants(tg)
    everything = dict.fromkeys(range(len(tg.tensors)), (0.0, 1.0))
    int8_ops = {id(op) for op in tg.ops if _can_be_int8(tg, op, everything, keep_float)}
    log_domain.float_front_ends(tg, int8_ops)
    _demote_float_feeders(tg, int8_ops)
    _float_regions(tg, int8_ops, "float32")
    found = {t for op in tg.ops if id(op) in int8_ops for t in (*op.inputs, *op.outputs) if t >= 0}
    for op in tg.ops:
        if id(op) not in int8_ops and op.opcode in MOVEMENT and op.inputs and op.inputs[0] in found \
                and tg.tensors[op.inputs[0]].name not in named:
            found.update(op.outputs)
    return found


def _through_conversions(tg: TGraph, means: dict) -> dict:
    """``means`` also under the int8 copy a QUANTIZE makes of a measured float tensor: a layer
    that reads the float graph input reads that copy, and its bias is corrected too."""
    out = dict(means)
    for op in tg.ops:
        if op.opcode == "QUANTIZE" and op.inputs[0] in out:
            out.setdefault(op.outputs[0], out[op.inputs[0]])
    return out


def _can_be_int8(tg: TGraph, op: TOp, ranges, keep_float) -> bool:
    if op.opcode not in INT8_OPS or op.node in keep_float:
        return False
    acts = [op.inputs[i] for i in data_inputs(op.opcode, op.inputs) if i < len(op.inputs)]
    acts = [i for i in acts if i >= 0 and not tg.tensors[i].is_const]
    if op.opcode not in FIXED_OUTPUT:
        acts += op.outputs
    return all(i in ranges for i in acts)


SPREAD = 8.0     # input ranges this far apart lose > 3 bits on the narrow one in a shared scale


def _float_output_joins(tg: TGraph, int8_ops: set[int], ranges: dict) -> None:
    """A CONCATENATION that writes a float graph output (directly or through data movement) and
    joins inputs whose ranges differ more than ``SPREAD`` times runs in float: each input is
    dequantized with its own scale. In int8 the shared scale would be the widest input's: a
    detector head's class scores (0-1) concatenated with pixel boxes (0-64) would get steps of
    0.25 and cross a 0.5 threshold by rounding. The output is float anyway, so this costs a
    DEQUANTIZE per input and a float copy of the head's few values."""
    readers = tg.consumers_of()
    outputs = set(tg.outputs)
    for op in tg.ops:
        if id(op) not in int8_ops or op.opcode != "CONCATENATION":
            continue
        chain = _movement_to_output(tg, op, readers, outputs, int8_ops)
        widths = [_width(ranges.get(i)) for i in op.inputs if i >= 0 and not tg.tensors[i].is_const]
        if chain is None or len(widths) < 2 or None in widths:
            continue
        if max(widths) > SPREAD * min(widths):
            for o in (op, *chain):
                int8_ops.discard(id(o))


SLICING = ("SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "GATHER")


def _float_input_slices(tg: TGraph, int8_ops: set[int], ranges: dict) -> None:
    """A slice of a float32 graph input whose range is more than ``SPREAD`` times narrower than
    the input's runs in float, so that it is quantized with its own scale after the cut. A
    streaming model that packs its states into one input (DTLN: the hidden states in [-1, 1]
    and the cell states up to +-211 in one [1, 2, 128, 2] tensor) would otherwise share the
    widest part's scale (int8 slicing keeps it) and lose the narrow parts whole: own SQNR of
    such a slice 0.1 dB. The input is float anyway; slicing float bytes costs what slicing
    int8 ones does."""
    inputs = {i for i in tg.inputs if tg.tensors[i].dtype == "float32"}
    for op in tg.ops:
        if id(op) not in int8_ops or op.opcode not in SLICING:
            continue
        src = op.inputs[data_inputs(op.opcode, op.inputs)[0]]
        whole, parts = _width(ranges.get(src)), [_width(ranges.get(o)) for o in op.outputs]
        if src in inputs and whole and None not in parts and min(parts) * SPREAD < whole:
            int8_ops.discard(id(op))


def _movement_to_output(tg, op, readers, outputs, int8_ops) -> list[TOp] | None:
    """The single-reader data-movement ops from ``op``'s output to a graph output, or None."""
    chain: list[TOp] = []
    t = op.outputs[0]
    while t not in outputs:
        nxt = readers.get(t, [])
        if len(nxt) != 1 or nxt[0].opcode not in SAME_PARAMS or id(nxt[0]) not in int8_ops \
                or nxt[0].opcode in ties.JOINING or len(nxt[0].outputs) != 1:
            return None
        chain.append(nxt[0])
        t = nxt[0].outputs[0]
    return chain if len(readers.get(t, [])) == 0 else None


def _width(rng) -> float | None:
    return None if rng is None else max(float(rng[1]), 0.0) - min(float(rng[0]), 0.0)


def _demote_float_feeders(tg: TGraph, int8_ops: set[int]) -> None:
    """Leave float the data-movement ops (``SAME_PARAMS``) that only float ops read.

    Walks backwards so a chain (TRANSPOSE -> PAD -> float CONV_2D) is demoted in one sweep. An op
    that writes a graph output stays as it was: moving int8 bytes to the output edge is cheaper."""
    readers = tg.consumers_of()
    outputs = set(tg.outputs)
    for op in reversed(tg.ops):
        if id(op) not in int8_ops or op.opcode not in SAME_PARAMS or set(op.outputs) & outputs:
            continue
        ops_reading = [r for o in op.outputs for r in readers.get(o, [])]
        if ops_reading and not any(id(r) in int8_ops for r in ops_reading):
            int8_ops.discard(id(op))


# Movement that copies bytes unchanged (no pooling, resizing or comparing).
MOVEMENT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "GATHER", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V",
            "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}
# Elementwise or reducing arithmetic, as cheap in float as in int8 (no weights).
CHEAP = {"ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "MEAN", "SUM", "ABS"}


def _float_regions(tg: TGraph, int8_ops: set[int], io: str) -> None:
    """Keep float what only float ops produce and read, so that no float value takes an int8
    round trip it does not need.

    * Data movement (``MOVEMENT``) whose input a float op makes and that at least one float op (or
      a float graph output) reads runs in float; its int8 readers get a QUANTIZE after it instead
      of before. In int8 the float reader would see the value rounded to a step it never needed: silero's LSTM writes its new
      state h to the state output *and* to the int8 decoder; through an int8 copy the fed-back
      state lost most of its bits (state output at 14 dB on its own).
    * Cheap arithmetic (``CHEAP``) whose every data input comes from a float op and whose every
      reader is a float op runs in float: a QUANTIZE in front and a DEQUANTIZE behind would only
      add rounding. Found as a greatest fixed point,
      so chains (MEAN -> ADD -> float RSQRT) go float together."""
    producer = {o: op for op in tg.ops for o in op.outputs}
    readers = tg.consumers_of()
    outputs = set(tg.outputs) if io == "float32" else set()

    def is_float(t: int, region: set[int]) -> bool:
        """Made by a float op (graph inputs do not count: see the CHEAP rule's comment)."""
        src = producer.get(t)
        return src is not None and (id(src) not in int8_ops or id(src) in region)

    def data(op):
        return [op.inputs[p] for p in data_inputs(op.opcode, op.inputs)
                if p < len(op.inputs) and op.inputs[p] >= 0 and not tg.tensors[op.inputs[p]].is_const]

    feeds_float: set[int] = set()        # movement ops from which moved bytes reach a float reader
    for op in reversed(tg.ops):
        if op.opcode in MOVEMENT and any(
                o in outputs or any(id(r) not in int8_ops or id(r) in feeds_float for r in readers.get(o, []))
                for o in op.outputs):
            feeds_float.add(id(op))
    for op in tg.ops:                    # forward: a chain follows its float input
        if id(op) in int8_ops and id(op) in feeds_float and data(op) and all(is_float(t, set()) for t in data(op)):
            int8_ops.discard(id(op))
    region = {id(op) for op in tg.ops if id(op) in int8_ops and op.opcode in CHEAP and data(op)}
    by_id = {id(op): op for op in tg.ops}
    changed = True
    while changed:
        changed = False
        for key in list(region):
            op = by_id[key]
            # only ops around it count: between a float graph input and output the op is what the
            # user asked to run in int8 (a one-op model, a pre-quantized QLinearAdd)
            ins_ok = all(is_float(t, region) for t in data(op))
            outs_ok = all(o not in tg.outputs and readers.get(o) and
                          all(id(r) not in int8_ops or id(r) in region for r in readers[o])
                          for o in op.outputs)
            if not (ins_ok and outs_ok):
                region.discard(key)
                changed = True
    int8_ops -= region


def _clone_shared_constants(tg: TGraph) -> None:
    """Give each (op, input) its own copy of a float constant: uses may need different params.

    Except a weight shared by ops that all read it as their weight (an unrolled recurrent layer's
    R, once per time step): per-channel weight params depend on the values alone, so the one
    int8 copy serves every use (T copies made a 40-step bidirectional LSTM 4x bigger)."""
    seen: dict[int, object] = {}
    for op in tg.ops:
        weight = WEIGHTS.get(op.opcode)
        for pos, i in enumerate(op.inputs):
            if i < 0 or not tg.tensors[i].is_const or tg.tensors[i].dtype != "float32":
                continue
            role = (weight[0], weight[1], op.opcode) if weight and pos == weight[0] else None
            if i in seen and (role is None or seen[i] != role):
                t = tg.tensors[i]
                op.inputs[pos] = tg.add(TTensor(f"{t.name}/copy{len(tg.tensors)}", t.shape, t.dtype,
                                                data=t.data.copy()))
                continue
            seen.setdefault(i, role)


def _assign(tg, int8_ops, domain, ranges, groups) -> dict[int, QParams]:
    """Every int8 tensor -> its group's one QParams object (``ties``, ``params``)."""
    members = ties.members_by_group(groups, domain)
    fixed = ties.fixed_params(tg, int8_ops, groups)
    group_range = ties.group_ranges(tg, int8_ops, groups, members, ranges)
    missing = sorted({tg.tensors[r].name for r in members if r not in fixed and group_range.get(r) is None})
    if missing:
        raise ConvertError(f"no calibration range for tensor(s) {', '.join(repr(n) for n in missing[:10])}",
                           code="convert.internal", where=missing[0],
                           hint="calibrate with data that reaches these tensors")
    by_root = assign_params(tg, int8_ops, groups.find, members, fixed, group_range)
    return {i: by_root[root] for root, idxs in members.items() for i in idxs}


def _quantize_constants(tg: TGraph, op: TOp, params: dict[int, QParams], input_means: dict,
                        originals: dict) -> None:
    weight_pos = WEIGHTS.get(op.opcode)
    if weight_pos is not None:
        w_i, axis, b_i = weight_pos
        x = op.inputs[data_inputs(op.opcode, op.inputs)[0]]
        weights = tg.tensors[op.inputs[w_i]]
        if op.inputs[w_i] in originals:           # shared weight, already int8 (see _clone_shared_constants)
            w_float, w_scale = originals[op.inputs[w_i]], weights.quant.scale
        else:
            w_float = originals[op.inputs[w_i]] = weights.data   # the float32 array itself: no copy
            floor = weight_scale_floor(params[x].scale[0], _bias_values(tg, op, b_i), weights.shape[axis])
            w_scale = per_channel_int8(weights, axis, tg.carried.get(op.node), op.node, floor)   # carried: kept ints
        correct = op.opcode in BIAS_CORRECTED and x in input_means
        if correct and (b_i >= len(op.inputs) or op.inputs[b_i] < 0):
            _add_zero_bias(tg, op, b_i, len(w_scale))        # TRANSPOSE_CONV may have none
        if b_i < len(op.inputs) and op.inputs[b_i] >= 0:
            bias = tg.tensors[op.inputs[b_i]]
            if correct:
                error = np.subtract(weights.data * _along(w_scale, axis, w_float.ndim), w_float, dtype=np.float64)
                shift = _rounding_shift(op.opcode, error, input_means[x], _spread(tg, op, x))
                if shift is not None:
                    bias.data = (bias.data.astype(np.float64) - shift).astype(np.float32)
            _bias(bias, params[x].scale[0] * w_scale)
    for pos in data_inputs(op.opcode, op.inputs):
        if pos >= len(op.inputs) or op.inputs[pos] < 0:
            continue
        t = tg.tensors[op.inputs[pos]]
        if not t.is_const or t.dtype != "float32":
            continue
        if op.opcode in SAME_PARAMS:
            q = params[op.outputs[0]]
        else:
            q = activation_params(float(t.data.min()), float(t.data.max()))
        t.data = np.clip(np.round(t.data / q.scale[0]) + q.zero_point[0], -128, 127).astype(np.int8)
        t.dtype, t.quant = "int8", q


def _saturate_addends(tg: TGraph, int8_ops: set[int], ranges: dict[int, tuple]) -> None:
    """Clip each float constant an int8 ADD adds to what can move its output: beyond
    [out low - other high, out high - other low] the sum saturates whatever the other addend is,
    so the int8 output is the same, and a fill (an attention mask's -1e9, -3.4e38 or -inf,
    ``calibrate/masks.py``) no longer sets the ADD's common input scale (at -1e9 it rounded the
    scores away; at -3.4e38 LiteRT aborted on the model)."""
    for op in tg.ops:
        if id(op) not in int8_ops or op.opcode != "ADD" or len(op.inputs) != 2:
            continue
        for pos, i in enumerate(op.inputs):
            t, other = tg.tensors[i], op.inputs[1 - pos]
            if not t.is_const or t.dtype != "float32" or ranges.get(other) is None \
                    or ranges.get(op.outputs[0]) is None:
                continue
            (out_lo, out_hi), (lo, hi) = ranges[op.outputs[0]], ranges[other]
            out_lo, out_hi, lo, hi = min(out_lo, 0.0), max(out_hi, 0.0), min(lo, 0.0), max(hi, 0.0)
            t.data = np.clip(np.nan_to_num(t.data, nan=0.0), out_lo - hi, out_hi - lo).astype(np.float32)


def weight_scale_floor(input_scale: float, bias: np.ndarray | None, channels: int) -> np.ndarray:
    """The smallest weight scale per output channel that keeps the int32 bias exact by construction.

    The bias scale is input scale x weight scale, stored as float32 (``_bias``). For a dead channel
    (weights ~1e-39, PP-OCRv4's recognizer has them) the product is a float32 subnormal: it loses
    the precision LiteRT checks (bias scale = input x weight scale, tflite/kernels/kernel_util.cc)
    or flushes to 0, and the channel's bias (its whole output) overflows int32 and is clipped.
    So each channel's weight scale is at least what keeps the product a normal float
    (``PRODUCT_MIN``) and its bias within int32 (with a margin for bias correction); weights below
    the floor round to 0, which they are to within ~1e-38 of the output anyway."""
    floor = np.full(channels, PRODUCT_MIN / float(input_scale))
    if bias is not None and bias.shape == (channels,):
        floor = np.maximum(floor, np.abs(bias.astype(np.float64)) / (BIAS_INT_LIMIT * float(input_scale)))
    return floor


def _bias_values(tg: TGraph, op: TOp, b_i: int) -> np.ndarray | None:
    b = op.inputs[b_i] if b_i < len(op.inputs) else -1
    return tg.tensors[b].data if b >= 0 and tg.tensors[b].is_const and tg.tensors[b].dtype == "float32" else None


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return values.astype(np.float64).reshape(shape)


def _spread(tg: TGraph, op: TOp, x: int) -> float:
    """Input positions per output position: 1, except for TRANSPOSE_CONV, whose every input pixel
    goes through every tap into its (VALID, uncropped) output, so each tap adds to an output
    position in(H*W) / out(H*W) of the time."""
    if op.opcode != "TRANSPOSE_CONV":
        return 1.0
    inp, out = tg.tensors[x].shape, tg.tensors[op.outputs[0]].shape
    return float(np.prod(inp[1:3])) / float(np.prod(out[1:3]))


def _add_zero_bias(tg: TGraph, op: TOp, index: int, channels: int) -> None:
    bias = tg.add(TTensor(f"{tg.tensors[op.outputs[0]].name}/bias", (channels,), "float32",
                          data=np.zeros(channels, np.float32)))
    op.inputs = list(op.inputs) + [-1] * (index + 1 - len(op.inputs))
    op.inputs[index] = bias


def _rounding_shift(opcode: str, error: np.ndarray, mean: np.ndarray, spread: float = 1.0) -> np.ndarray | None:
    """Per output channel, the expected output change that the weights' rounding ``error`` causes
    for an input whose channels have ``mean`` (zero padding at the borders is ignored); ``spread``:
    input positions per output position (``_spread``)."""
    mean = np.asarray(mean, np.float64) * spread
    if opcode == "DEPTHWISE_CONV_2D":             # [1, kH, kW, C*m]: channel j reads input j // m
        out = error.shape[3]
        if out % len(mean):
            return None
        return error.sum(axis=(0, 1, 2)) * np.repeat(mean, out // len(mean))
    if error.shape[-1] != len(mean):   # CONV_2D, TRANSPOSE_CONV [O, kH, kW, I]; FULLY_CONNECTED [O, I]
        return None
    return error.reshape(error.shape[0], -1, error.shape[-1]).sum(axis=1) @ mean


def _bias(t: TTensor, scale: np.ndarray) -> None:
    scale = np.broadcast_to(np.asarray(scale, np.float64), t.data.shape)
    q = np.round(t.data.astype(np.float64) / scale)
    t.data = np.clip(q, -2**31 + 1, 2**31 - 1).astype(np.int32)
    t.dtype = "int32"
    t.quant = QParams(scale.astype(np.float32), np.zeros(len(scale), np.int64), 0)
