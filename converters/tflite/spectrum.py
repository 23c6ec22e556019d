"""Keep a magnitude-spectrum front end float: the STFT, ``sqrt(re^2 + im^2)``, and the layer that reads it.

Voice-activity detectors and other small audio networks (silero VAD's four ONNX exports) start
with an STFT written as a Conv with a fixed basis, take the magnitude ``sqrt(re^2 + im^2)``, and
feed it to a learned Conv. A spectrum's bins span decades (the quiet ones 40-60 dB below the
loud ones), and no LOG compresses them here (``log_domain.py`` handles that case): the first
layer reads the magnitudes linearly. int8 rounds both the STFT output and the magnitude to 255
steps over the loudest bin, so the quiet bins that tell speech from noise keep a step or two.
Measured on silero VAD (zoo3 holdout, 200 calls; pooled with 300 unused calibration calls):

    model (export)       per-call SQNR     closed-loop SQNR   speech agreement, closed loop
    silero_vad (op16)    27.2 -> 43.4 dB   27.0 -> 38.6 dB    0.99 -> 1.0   (pooled 0.90 -> 0.98)
    OpenVINO             23.9 -> 35.1      17.4 -> 27.7       0.945 -> 0.955 (pooled 0.972 -> 0.980)
    half                 21.9 -> 33.7      13.4 -> 19.2       0.915 -> 0.985 (pooled 0.952 -> 0.988)

Either rounding alone does it (float STFT with an int8 magnitude, or the reverse, recovered
nothing), and no range method repairs it (entropy's or percentile:99.9's cut on both helped one
export and not the others). The cost is float32 weights for the STFT basis and the first layer
(silero: 736 KB -> 1,077 KB) and their float kernels (about 0.5 M multiply-adds per call there).

A front end here is: a SQRT of ``re^2 + im^2`` (an ADD of two ``MUL(x, x)``; a normalization's
``sqrt(mean(x^2) + eps)`` is not one) computed from a graph input by linear DSP only
(``log_domain.DSP``: a fixed filter, squares, sums, data movement) that holds a filter (a
CONV_2D / FULLY_CONNECTED / BATCH_MATMUL with constant weights).
The SQRT, that cone, and the first weighted layers that read the SQRT (through data movement)
stay float (``build`` adds their nodes to the kept ones, and the QDQ target keeps the same ONNX
nodes float); what follows the layer is int8 again.

    magnitude_nodes(tg) -> {IR node}
"""
from __future__ import annotations

from converters.tflite.log_domain import cone
from converters.tgraph import TGraph, TOp

FILTERS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"}
LAYERS = FILTERS | {"TRANSPOSE_CONV"}
MOVES = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "PAD", "PADV2"}


def magnitude_nodes(tg: TGraph) -> set[str]:
    """IR nodes of every magnitude-spectrum front end of ``tg`` (the module doc): ``build`` keeps
    them float, and names their ONNX nodes so that the QDQ model keeps the same ones."""
    producer = {o: op for op in tg.ops for o in op.outputs}
    readers = tg.consumers_of()
    found: set[str] = set()
    for op in tg.ops:
        if op.opcode != "SQRT" or not _is_magnitude(op.inputs[0], producer):
            continue
        ops = cone(tg, op.inputs[0], producer)
        if ops and _is_spectrum(tg, ops):
            found |= {member.node for member in (*ops, op, *_first_layers(op.outputs[0], readers)) if member.node}
    return found


def _is_magnitude(t: int, producer: dict) -> bool:
    """``t`` is ``re^2 + im^2``: an ADD of two squares (not a norm's ``mean(x^2) + eps``, nor the
    sum of squares over a vector of an L2 normalization)."""
    add = producer.get(t)
    if add is None or add.opcode != "ADD" or len(add.inputs) != 2:
        return False
    squares = [producer.get(i) for i in add.inputs]
    return all(sq is not None and sq.opcode == "MUL" and sq.inputs[0] == sq.inputs[1] for sq in squares)


def _is_spectrum(tg: TGraph, ops: list[TOp]) -> bool:
    """A square of a value and a constant filter among ``ops``."""
    square = any(o.opcode == "MUL" and len(o.inputs) == 2 and o.inputs[0] == o.inputs[1] for o in ops)
    filtered = any(o.opcode in FILTERS and len(o.inputs) > 1 and o.inputs[1] >= 0
                   and tg.tensors[o.inputs[1]].is_const for o in ops)
    return square and filtered


def _first_layers(t: int, readers: dict) -> list[TOp]:
    """The weighted layers that read ``t``, and the data movement on the way to them."""
    found = []
    for op in readers.get(t, []):
        if op.opcode in LAYERS:
            found.append(op)
        elif op.opcode in MOVES and op.outputs:
            inner = _first_layers(op.outputs[0], readers)
            found += [op, *inner] if inner else []
    return found
