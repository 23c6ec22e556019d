"""Float values stay float where int8 would only round them (converters/tflite/quantize.py
``_float_regions``, the SQUARE rule of converters/tflite/precision.py). Real LiteRT int8 against
onnxruntime float on small graphs of the two shapes found in silero VAD: a spectrogram's power
(squares, their sum, a square root) and a float layer's output read both by a float op and an
int8 one."""
import numpy as np
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges
from converters.tflite import precision, quantize, spectrum
from core.litert import make_interpreter
from tests.converters.ops import harness as H

RNG = np.random.default_rng(11)


def _build(m, calib, **options):
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    return tflite.build(m, ranges, tflite.TFLiteOptions(**options), samples=calib)


def _dtype(result, name: str) -> str:
    interp = make_interpreter(result.flatbuffer)
    return interp.get_tensor_details()[result.tensor_map[name]["index"]]["dtype"].__name__


def _sqnr(m, result, held, output: int = 0):
    ref = np.concatenate([H.ort_run(m, s)[output].ravel() for s in held])
    return H.sqnr_db(ref, np.concatenate([H.tflite_run(result, s)[output].ravel() for s in held]))


def _spectrogram():
    """A DFT as a Gemm (real and imaginary rows), |X| = sqrt(re^2 + im^2) (an output too), then
    a Gemm."""
    n, k = 64, 16
    t = np.arange(n)
    basis = np.concatenate([np.cos(2 * np.pi * np.outer(np.arange(k), t) / n),
                            -np.sin(2 * np.pi * np.outer(np.arange(k), t) / n)]).astype(np.float32)
    two = np.array(2.0, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "dft"], ["spec"], name="dft", transB=1),
             helper.make_node("Split", ["spec"], ["re", "im"], name="split", axis=1, num_outputs=2),
             helper.make_node("Pow", ["re", "two"], ["re2"], name="pow_re"),
             helper.make_node("Pow", ["im", "two"], ["im2"], name="pow_im"),
             helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
             helper.make_node("Sqrt", ["power"], ["mag"], name="mag"),
             helper.make_node("Gemm", ["mag", "w"], ["y"], name="fc", transB=1)]
    w = RNG.normal(0, 0.3, (8, k)).astype(np.float32)
    m = H.model(nodes, {"x": (1, n)}, ["y", "mag"], {"dft": basis, "two": two, "w": w}, opset=18)
    return m, [_frame(n) for _ in range(32)], [_frame(n) for _ in range(16)]


def _frame(n: int) -> dict:
    """Two loud tones over quiet noise: a few large bins, most of them small."""
    t = np.arange(n)
    tones = sum(np.cos(2 * np.pi * RNG.integers(1, 15) * t / n + RNG.uniform(0, 6)) for _ in range(2))
    return {"x": (tones + RNG.normal(0, 0.05, n)).astype(np.float32)[None]}


def _without_rules(monkeypatch):
    """The same build with the rules switched off: squares int8, no float regions (nor a float
    magnitude spectrum, ``spectrum.py``, which holds the squares too)."""
    monkeypatch.setattr(quantize, "_float_regions", lambda tg, int8_ops, io: None)
    monkeypatch.setattr(spectrum, "magnitude_nodes", lambda tg: set())
    real = precision.float_nodes
    monkeypatch.setattr(precision, "float_nodes", lambda tg, ranges, squares=frozenset(): real(tg, ranges))


def test_squares_and_their_sum_stay_float_and_keep_the_small_bins(monkeypatch):
    m, calib, held = _spectrogram()
    result = _build(m, calib)
    for name in ("re2", "im2", "power", "mag"):
        assert _dtype(result, name) == "float32", name
    # the DFT (a fixed filter bank under a magnitude) is float too, with the Gemm that reads the
    # magnitude (tflite/spectrum.py; tests/converters/tflite/test_spectrum.py)
    assert _dtype(result, "spec") == "float32"
    kept = _sqnr(m, result, held, output=1)
    _without_rules(monkeypatch)
    plain = _build(m, calib)
    assert _dtype(plain, "re2") == "int8"
    gain = kept - _sqnr(m, plain, held, output=1)
    assert gain > 3.0, (kept, gain)


def _state_fork():
    """A float layer (Sqrt: no int8 kernel) whose output, moved by one Reshape, is both a graph
    output (like a recurrent state written back) and the input of int8 layers."""
    nodes = [helper.make_node("Sqrt", ["x"], ["s"], name="sqrt"),
             helper.make_node("Reshape", ["s", "shape"], ["s3"], name="unsqueeze"),   # read by both
             helper.make_node("Reshape", ["s3", "shape"], ["state"], name="to_state"),
             helper.make_node("Relu", ["s3"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "flat"], ["r2"], name="flat"),
             helper.make_node("Gemm", ["r2", "w2"], ["y"], name="fc2", transB=1)]
    inits = {"w2": RNG.normal(0, 0.3, (4, 16)).astype(np.float32),
             "shape": np.array([1, 1, 16], np.int64), "flat": np.array([1, 16], np.int64)}
    m = H.model(nodes, {"x": (1, 16)}, ["y", "state"], inits, opset=18)
    data = [{"x": RNG.uniform(0.1, 4.0, (1, 16)).astype(np.float32)} for _ in range(40)]
    return m, data[:24], data[24:]


def test_a_float_value_read_by_a_float_output_is_not_rounded_through_int8(monkeypatch):
    m, calib, held = _state_fork()
    result = _build(m, calib)
    assert _dtype(result, "s") == "float32"       # SQRT has no int8 kernel: a float island
    assert _dtype(result, "state") == "float32"
    assert _dtype(result, "r") == "int8"          # the int8 branch still runs in int8
    kept = _sqnr(m, result, held, output=1)
    assert kept > 100.0                           # the float value itself, moved
    _without_rules(monkeypatch)
    plain = _build(m, calib)
    # without the rule the state output is an int8 copy of the Sqrt's value: one more rounding
    assert _dtype(plain, "s3") == "int8"
    assert kept - _sqnr(m, plain, held, output=1) > 3.0


def _packed_states():
    """One [1, 2, 16, 2] state input holding a hidden state in [-1, 1] (last index 0) and a cell
    state up to +-150 (index 1), as DTLN packs its LSTM states; each part feeds its own Gemm."""
    nodes, inits = [], {}
    for part in (0, 1):
        inits[f"start{part}"] = np.array([0, 0, 0, part], np.int64)
        inits[f"end{part}"] = np.array([1, 2, 16, part + 1], np.int64)
        inits[f"w{part}"] = RNG.normal(0, 0.3, (4, 32)).astype(np.float32)
        nodes += [helper.make_node("Slice", ["state", f"start{part}", f"end{part}"], [f"s{part}"]),
                  helper.make_node("Reshape", [f"s{part}", "flat"], [f"f{part}"]),
                  helper.make_node("Gemm", [f"f{part}", f"w{part}"], [f"y{part}"], transB=1)]
    inits["flat"] = np.array([1, 32], np.int64)
    m = H.model(nodes, {"state": (1, 2, 16, 2)}, ["y0", "y1"], inits)

    def sample():
        s = np.empty((1, 2, 16, 2), np.float32)
        s[..., 0] = np.tanh(RNG.normal(0, 1, (1, 2, 16)))
        s[..., 1] = RNG.normal(0, 50, (1, 2, 16)).clip(-150, 150)
        return {"state": s}
    return m, [sample() for _ in range(32)], [sample() for _ in range(16)]


def test_a_packed_state_input_is_cut_in_float_and_each_part_quantized_alone(monkeypatch):
    m, calib, held = _packed_states()
    res = _build(m, calib, quantize="int8")
    narrow = _sqnr(m, res, held, output=0)
    assert narrow > 35, narrow                    # the hidden state's own scale: 1/127 steps
    assert _sqnr(m, res, held, output=1) > 25       # the wide part: as before
    monkeypatch.setattr(quantize, "_float_input_slices", lambda tg, int8_ops, ranges: None)
    shared = _sqnr(m, _build(m, calib, quantize="int8"), held, output=0)
    assert shared < narrow - 20, (shared, narrow)   # one scale for both: steps of ~1.2 on [-1, 1]
