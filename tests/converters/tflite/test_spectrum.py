"""A magnitude-spectrum front end (an STFT as one Conv, ``sqrt(re^2 + im^2)``, a learned Conv that
reads it) keeps the STFT, the magnitude and that first layer float in int8
(converters/tflite/spectrum.py): the spectrum's quiet bins, 40-60 dB under the loud ones, keep a
step or two in int8. LiteRT against onnxruntime on tones whose amplitudes span three decades;
the layer after the first one stays int8, and a Sqrt of something else is left alone."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from converters.tflite import spectrum
from tests.converters.ops import harness as H

N, WIN, HOP, BINS, CH = 576, 64, 32, 33, 16
RNG = np.random.default_rng(12)
LOUD = 8                                            # the loud tone's bin
QUIET = (np.abs(np.arange(BINS) - LOUD) > 3).astype(np.float32)      # the bins the learned layer reads


def _vad_front(stft="magnitude"):
    """silero VAD's shape: audio (1, N) -> Unsqueeze -> Conv([cos; sin] basis) -> Slice re, im ->
    Pow 2, Pow 2 -> Add -> Sqrt -> Conv (learned, k=3) + Relu -> Conv (learned, k=1). The learned
    Conv ignores the bins around the loud tone (``LOUD``): what it reads is 40-60 dB down. Not
    magnitudes: ``stft="relu"``, Sqrt of a Relu of the filter bank; ``"norm"``, the filter bank
    divided by its RMS over bins, then a Sqrt of a Relu."""
    t = np.arange(WIN)
    freqs = np.arange(BINS)[:, None] * t[None] / WIN * 2 * np.pi
    window = np.hanning(WIN)
    basis = np.concatenate([np.cos(freqs) * window, np.sin(freqs) * window]).astype(np.float32)[:, None]
    inits = {"ax": np.array([1], np.int64), "basis": basis,
             "s0": np.array([0], np.int64), "s1": np.array([BINS], np.int64), "s2": np.array([2 * BINS], np.int64),
             "a1": np.array([1], np.int64), "two": np.float32(2.0),
             "w1": (RNG.normal(0, 0.3, (CH, BINS, 3)) * QUIET[None, :, None]).astype(np.float32),
             "b1": RNG.normal(0, 0.1, CH).astype(np.float32),
             "w2": RNG.normal(0, 0.3, (4, CH, 1)).astype(np.float32)}
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
             helper.make_node("Conv", ["u", "basis"], ["spec"], strides=[HOP])]
    nodes += [helper.make_node("Slice", ["spec", "s0", "s1", "a1"], ["re"]),
              helper.make_node("Slice", ["spec", "s1", "s2", "a1"], ["im"])]
    if stft == "magnitude":
        nodes += [helper.make_node("Pow", ["re", "two"], ["re2"]), helper.make_node("Pow", ["im", "two"], ["im2"]),
                  helper.make_node("Add", ["re2", "im2"], ["power"])]
    elif stft == "norm":            # sqrt(mean(x^2) + eps): a normalization, not a magnitude
        inits["eps"] = np.float32(1e-3)
        nodes += [helper.make_node("Mul", ["re", "re"], ["re2"]),
                  helper.make_node("ReduceMean", ["re2"], ["ms"], axes=[1], keepdims=1),
                  helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
                  helper.make_node("Sqrt", ["ms_eps"], ["rms"]),
                  helper.make_node("Div", ["re", "rms"], ["normed"]),
                  helper.make_node("Relu", ["normed"], ["power"])]
    else:
        nodes += [helper.make_node("Relu", ["re"], ["power"])]
    nodes += [helper.make_node("Sqrt", ["power"], ["mag"]),
              helper.make_node("Conv", ["mag", "w1", "b1"], ["h"], pads=[1, 1]),
              helper.make_node("Relu", ["h"], ["r"]),
              helper.make_node("Conv", ["r", "w2"], ["y"])]
    return H.model(nodes, {"x": (1, N)}, ["y"], inits)


def _tones(n: int) -> list[dict]:
    """A loud tone at bin ``LOUD`` plus two at 1e-2 and 1e-3 of its amplitude (-40, -60 dB) in the
    bins the learned layer reads, and faint noise."""
    out, t = [], np.arange(N)
    for _ in range(n):
        f = np.concatenate([[LOUD / WIN], RNG.uniform(14 / WIN, 30 / WIN, 2)])
        x = sum(a * np.sin(2 * np.pi * fi * t + RNG.uniform(0, 6)) for a, fi in zip((1, 1e-2, 1e-3), f))
        out.append({"x": (x + RNG.normal(0, 1e-5, N))[None].astype(np.float32)})
    return out


def _build_both(m, calib, monkeypatch):
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    kept = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    with monkeypatch.context() as patch:
        patch.setattr(spectrum, "magnitude_nodes", lambda tg: set())
        plain = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    return kept, plain


def test_magnitude_spectrum_and_its_reader_stay_float(monkeypatch):
    m = _vad_front()
    data = _tones(24)
    calib, held = data[:16], data[16:]
    kept, plain = _build_both(m, calib, monkeypatch)
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])

    def sqnr(result):
        return H.sqnr_db(ref, np.concatenate([H.tflite_run(result, s)[0].ravel() for s in held]))
    assert sqnr(kept) > 25.0 and sqnr(plain) < 15.0, (sqnr(kept), sqnr(plain))    # 30.0 vs 8.8 dB
    # the STFT Conv, the Sqrt and the first learned Conv come before the first QUANTIZE; the second is int8
    first_q = kept.ops.index("QUANTIZE")
    assert kept.ops[:first_q].count("CONV_2D") == 2 and "SQRT" in kept.ops[:first_q], kept.ops
    assert "CONV_2D" in kept.ops[first_q:], kept.ops
    assert plain.ops.index("QUANTIZE") < plain.ops.index("CONV_2D"), plain.ops


@pytest.mark.parametrize("stft", ["relu", "norm"])
def test_a_sqrt_of_no_magnitude_is_left_alone(monkeypatch, stft):
    m = _vad_front(stft)
    kept, plain = _build_both(m, _tones(8), monkeypatch)
    assert kept.ops == plain.ops
    assert kept.flatbuffer == plain.flatbuffer


@pytest.mark.parametrize("stft, rounded", [("magnitude", False), ("relu", True)])
def test_the_scorer_does_not_round_the_float_front_end(stft, rounded):
    """``auto``'s view of the int8 model (``tflite.int8_view``) leaves out what stays float."""
    view = tflite.int8_view(tflite.ir_graph(_vad_front(stft), tflite.TFLiteOptions()))
    assert ("mag" in view.tensors) == rounded and ("r" in view.tensors)


def test_the_qdq_model_keeps_the_same_front_end_float(tmp_path):
    """One compiler: the QDQ target keeps the ONNX nodes the TFLite build kept float (listed in
    the manifest's keep_float), and quantizes the layer after them."""
    m = _vad_front()
    kept, qdq = H.convert_both(tmp_path, m, {"x": np.stack([s["x"] for s in _tones(16)])})
    assert {"Conv_1", "Sqrt_7", "Conv_8"} <= set(kept), kept
    dequantized = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    weights = {n.input[1]: n.input[1] in dequantized for n in qdq.graph.node if n.op_type == "Conv"}
    assert sorted(weights.values()) == [False, False, True], weights     # STFT and first layer float
