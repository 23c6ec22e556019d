"""Which nodes stay float because int8 cannot hold their arithmetic, decided from measured ranges.

Most int8 error is rounding noise of about one step per tensor, which later layers tolerate. Some
ops amplify it without bound instead; for those the quantizer keeps the ONNX node they came from
in float (DEQUANTIZE before, QUANTIZE after: a float island), which is what ONNX Runtime's QDQ
models compute too (a DequantizeLinear -> float op -> QuantizeLinear sandwich).

    NORM    every normalization (LayerNormalization, InstanceNormalization, ``ganglion::Normalize``:
            the nodes whose lowering has an RSQRT). Its int8 lowering rounds three to five
            full-size temporaries (``x - mean``, the normalized value, ``* gamma``, ``+ beta``),
            each about as coarse as the output's own int8 step, where ONNX Runtime's QDQ model
            rounds only the input and the output (its LayerNormalization runs float between
            them). Measured on khmer_segmenter's six post-norm LayerNorms (narrow variance ranges,
            so the statistics themselves held in int8): 33.6 dB per LayerNorm output int8, 37.7
            float; the mean, variance and rsqrt roundings cost < 0.1 dB, the full-size ones ~1
            dB each. A wide variance range costs more (the inverse deviation of a token at the
            bottom of the range loses its bits: ConvNeXt-T 12 dB, a small ViT 3 dB). Float is
            not slower in LiteRT (XNNPACK runs the float chain; int8 MEAN/RSQRT split it): see
            docs/quantization.md. A written-out LayerNorm's own ``Mul`` gamma / ``Add`` beta stay
            int8 ops (floating them too measured -0.54 dB on PP-OCRv6's recognizer).

    SOFTMAX the int8 output is fixed at steps of 1/256 (TFLite int8 spec); over T positions the
            average probability is 1/T, so attention over T >= ``SOFTMAX_FLOAT_FROM`` tokens
            keeps fewer than 256/T steps for a typical weight. Measured: float attention
            softmaxes add 0.7 dB on the ViT of bench/fidelity_bench.py (197 tokens).

    SQUARE  ``Pow(x, 2)`` / ``Mul(x, x)`` (lowered to MUL(x, x)): the square doubles the dynamic
            range in dB, so an int8 output over [0, max^2] rounds every value below max/16 to a
            step or two. A spectrogram's ``re^2 + im^2`` is mostly such values: silero VAD's STFT
            power lost 12-17 dB per square in int8. ONNX Runtime's quantizer never quantizes Pow
            either. Only whole ONNX square nodes are meant (not the variance inside a lowered
            LayerNormalization, which the NORM rule covers).

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

SOFTMAX_FLOAT_FROM = 64
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
    return found


def normalizations(tg: TGraph) -> set[str]:
    """The NORM rule: the nodes with an RSQRT (only ``lower/norm.py`` emits one)."""
    return {op.node for op in tg.ops if op.opcode == "RSQRT" and op.node}


def _clipped(op, ranges: dict) -> bool:
    """True when ``op``'s measured output range passes its fixed int8 grid's top by > half a step."""
    rng = ranges.get(op.outputs[0])
    scale, zero = FIXED_OUTPUT[op.opcode]
    return rng is not None and rng[1] > (127 - zero) * scale + scale / 2
