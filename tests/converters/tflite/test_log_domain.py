"""A log-mel front end (STFT as a Conv, squares, a mel MatMul, a floor, Log) keeps its linear DSP
float in int8 (converters/tflite/log_domain.py): its quiet bins are 60+ dB below the loud ones and
round to 0 in int8, which Log turns into the floor. LiteRT against onnxruntime, on tones whose
amplitudes span three decades; the layers after Log (a small learned head) stay int8."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from converters.tflite import log_domain
from tests.converters.ops import harness as H

N, WIN, HOP, BINS, MELS = 1024, 64, 32, 33, 8
RNG = np.random.default_rng(11)


def _front_end(head: bool):
    """audio (1, N) -> Unsqueeze -> Conv(cos), Conv(sin) -> re^2 + im^2 -> Transpose -> MatMul(mel)
    -> Clip(1e-10) -> Log -> * 10/ln 10 (dB) [-> MatMul + Relu: a learned head]."""
    t = np.arange(WIN)
    freqs = np.arange(BINS)[:, None] * t[None] / WIN * 2 * np.pi
    window = np.hanning(WIN)
    cos = (np.cos(freqs) * window).astype(np.float32).reshape(BINS, 1, WIN)
    sin = (np.sin(freqs) * window).astype(np.float32).reshape(BINS, 1, WIN)
    mel = np.zeros((BINS, MELS), np.float32)          # one band of 4 bins per mel channel (bin 0: DC, out)
    for j in range(MELS):
        mel[1 + 4 * j:5 + 4 * j, j] = 1.0
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
             helper.make_node("Conv", ["u", "cos"], ["re"], strides=[HOP]),
             helper.make_node("Conv", ["u", "sin"], ["im"], strides=[HOP]),
             helper.make_node("Mul", ["re", "re"], ["re2"]), helper.make_node("Mul", ["im", "im"], ["im2"]),
             helper.make_node("Add", ["re2", "im2"], ["power"]),
             helper.make_node("Transpose", ["power"], ["frames"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["frames", "mel"], ["m"]),
             helper.make_node("Clip", ["m", "amin"], ["c"]), helper.make_node("Log", ["c"], ["ln"]),
             helper.make_node("Mul", ["ln", "to_db"], ["db" if head else "y"])]
    inits = {"ax": np.array([1], np.int64), "cos": cos, "sin": sin, "mel": mel, "amin": np.float32(1e-10),
             "to_db": np.float32(10 / np.log(10))}
    if head:
        nodes += [helper.make_node("MatMul", ["db", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
        inits["w"] = RNG.normal(0, 0.1, (MELS, 4)).astype(np.float32)
    return H.model(nodes, {"x": (1, N)}, ["y"], inits)


def _tones(n: int) -> list[dict]:
    """Sums of 3 tones at 1, 1e-2 and 1e-3 amplitude (0, -40, -60 dB) plus faint noise."""
    out, t = [], np.arange(N)
    for _ in range(n):
        f = RNG.uniform(0.02, 0.45, 3)
        x = sum(a * np.sin(2 * np.pi * fi * t + RNG.uniform(0, 6)) for a, fi in zip((1, 1e-2, 1e-3), f))
        out.append({"x": (x + RNG.normal(0, 1e-5, N))[None].astype(np.float32)})
    return out


@pytest.mark.parametrize("head", [False, True], ids=["front_end", "front_end_and_head"])
def test_log_mel_front_end_stays_float(head, monkeypatch):
    m = _front_end(head)
    data = _tones(24)
    calib, held = data[:16], data[16:]
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])

    def sqnr(result):
        return H.sqnr_db(ref, np.concatenate([H.tflite_run(result, s)[0].ravel() for s in held]))
    kept = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    monkeypatch.setattr(log_domain, "float_front_ends", lambda tg, int8_ops: 0)
    plain = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    assert sqnr(kept) > 28.0 and sqnr(plain) < 15.0, (sqnr(kept), sqnr(plain))    # with the head: 32.0 vs 3.2 dB
    # the front end runs float: its ops come before the first QUANTIZE; a head after Log is int8
    first_q = kept.ops.index("QUANTIZE")
    assert "CONV_2D" in kept.ops[:first_q] and "LOG" in kept.ops[:first_q], kept.ops
    if head:
        assert "FULLY_CONNECTED" in kept.ops[first_q:], kept.ops
