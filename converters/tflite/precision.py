"""Which nodes stay float because int8 cannot hold their arithmetic, decided from measured ranges.

Most int8 error is rounding noise of about one step per tensor, which later layers tolerate. Some
ops amplify it without bound instead; for those the quantizer keeps the ONNX node they came from
in float (DEQUANTIZE before, QUANTIZE after: a float island), which is what ONNX Runtime's QDQ
models compute too (a DequantizeLinear -> float op -> QuantizeLinear sandwich).

    RSQRT   the inverse standard deviation of a LayerNormalization / InstanceNormalization (or any
            ``1/sqrt``). Its int8 input steps are ``(hi - lo) / 255``, the same for every token, so
            a token whose variance sits near the bottom of the measured range loses most of its
            bits: the relative error of rsqrt at the smallest input ``lo`` is ``step / (4 lo)``.
            Measured on torchvision exports (bench/fidelity_bench.py): per-token variances span
            ranges of 10^2-10^4, and the int8 chain cost ConvNeXt-T ~12 dB and a small ViT ~3 dB;
            float LayerNorms recover ONNX Runtime's figure. The node stays float when that error
            exceeds ``MAX_RELATIVE_ERROR`` (1/64: noise at -36 dB, the level of int8 rounding
            of a typical activation), i.e. when the measured input range spans more than a
            factor 16 (or reaches zero).

    SOFTMAX the int8 output is fixed at steps of 1/256 (TFLite int8 spec); over T positions the
            average probability is 1/T, so attention over T >= ``SOFTMAX_FLOAT_FROM`` tokens
            keeps fewer than 256/T steps for a typical weight. Measured: float attention
            softmaxes add 0.7 dB on the ViT of bench/fidelity_bench.py (197 tokens).

    SQUARE  ``Pow(x, 2)`` / ``Mul(x, x)`` (lowered to MUL(x, x)): the square doubles the dynamic
            range in dB, so an int8 output over [0, max^2] rounds every value below max/16 to a
            step or two. A spectrogram's ``re^2 + im^2`` is mostly such values: silero VAD's STFT
            power lost 12-17 dB per square in int8. ONNX Runtime's quantizer never quantizes Pow
            either. Only whole ONNX square nodes are meant (not the variance inside a lowered
            LayerNormalization, which the RSQRT rule covers).

    OUTPUT  a SOFTMAX that writes a graph output itself (an int8 copy after it, such as an NHWC
    HEAD    layout TRANSPOSE, would round it again) and whose measured output range goes past the
            top of its fixed int8 grid
            (``rules.FIXED_OUTPUT``: steps of 1/256 up to 255/256) by more than half a step. Such
            values are clipped, so a confident probability of 0.9999 comes out as 0.996: that cap,
            not the network, set a text-direction classifier's SQNR (PP-OCR mobile cls, 2
            classes: 46.4 dB int8, 51.3 dB with its final Softmax float). In float the caller gets
            the function of the int8 logits, for one DEQUANTIZE and a float softmax of the
            output's values. Not LOGISTIC / TANH: an int8 reader lets ``saturate.py`` cut their
            input range to [-7, 7] / [-3.5, 3.5], and a float one loses that (measured on a
            2-class sigmoid head with logits to +-12: 42.3 dB int8, 40.4 dB float). A head that
            joins a CONCATENATION keeps the int8 tie machinery (``ties.py``) as it is.

The rules read the ranges the backend already has (calibration ranges of ONNX tensors, measured
ranges of the lowering's temporaries: ``tflite/ranges.py``), so it costs nothing extra.
"""
from __future__ import annotations

from converters.tflite.rules import FIXED_OUTPUT
from converters.tgraph import TGraph

MAX_RELATIVE_ERROR = 1.0 / 64
SOFTMAX_FLOAT_FROM = 64


def rsqrt_error(lo: float, hi: float) -> float:
    """Worst relative error of ``1/sqrt(x)`` on int8 ``x`` quantized over [min(lo,0), max(hi,0)]
    (the rounding error at the smallest input, ``lo``); infinite when ``lo <= 0``."""
    if lo <= 0.0:
        return float("inf")
    step = (max(hi, 0.0) - min(lo, 0.0)) / 255.0
    # d(x^-1/2)/x^-1/2 = -dx / (2x); the rounding error dx is at most step / 2
    return step / (4.0 * lo)


OUTPUT_HEADS = {"SOFTMAX"}


def float_nodes(tg: TGraph, ranges: dict[int, tuple[float, float]],
                squares: frozenset[str] = frozenset()) -> set[str]:
    """IR node names whose ops int8 would wreck (see the module doc), given ranges by tensor;
    ``squares``: IR nodes that are a Pow or Mul of their own (the SQUARE rule applies to them)."""
    found = set()
    readers = tg.consumers_of()
    for op in tg.ops:
        if not op.node:
            continue
        if op.opcode == "MUL" and op.node in squares and op.inputs[0] == op.inputs[1]:
            found.add(op.node)
        if op.opcode in OUTPUT_HEADS and _clipped(op, ranges) and op.outputs[0] in tg.outputs \
                and not readers.get(op.outputs[0]):
            found.add(op.node)
        if op.opcode == "SOFTMAX" and tg.tensors[op.inputs[0]].shape[-1] >= SOFTMAX_FLOAT_FROM:
            found.add(op.node)
        if op.opcode != "RSQRT":
            continue
        rng = ranges.get(op.inputs[0])
        if rng is None or rsqrt_error(*rng) > MAX_RELATIVE_ERROR:
            found.add(op.node)
    return found


def _clipped(op, ranges: dict) -> bool:
    """True when ``op``'s measured output range passes its fixed int8 grid's top by > half a step."""
    rng = ranges.get(op.outputs[0])
    scale, zero = FIXED_OUTPUT[op.opcode]
    return rng is not None and rng[1] > (127 - zero) * scale + scale / 2

