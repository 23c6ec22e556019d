"""LSTM / GRU / RNN: unrolled into FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD, SPLIT, CONCATENATION.

Every case runs float and int8 in LiteRT against the reference: onnxruntime for layout 0, the ONNX
reference evaluator for layout 1 (onnxruntime refuses batch-major recurrent layers). Calibration
is what ``ganglion convert`` does: ``collect_ranges`` in onnxruntime, plus ``samples`` to the build
so the ranges of the per-step tensors are measured in LiteRT; for layout 1 the input ranges come
from the samples themselves (onnxruntime cannot run that graph) and everything else is measured.
"""
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from converters import tflite
from converters.calibrate import collect_ranges
from converters.errors import UnsupportedOpsError
from converters.lower.recurrent import MAX_STEPS
from tests.converters.ops import harness as H

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
UNROLLED_OPS = {"FULLY_CONNECTED", "ADD", "SUB", "MUL", "SPLIT", "LOGISTIC", "TANH", "RELU",
                "CONCATENATION", "RESHAPE", "TRANSPOSE", "MAXIMUM", "MINIMUM"}
# int8 error budget in output steps: every step requantizes the state, so rounding compounds
# over the sequence (a single op stays within ~1 step; 8 steps here is ~3% of a [-1, 1] range).
INT8_STEPS = 8.0
INT8_MIN_SQNR = 25.0


def recurrent_model(op, *, steps=6, batch=1, inp=5, hidden=4, direction="forward", layout=0,
                    h0=None, c0=None, peepholes=False, seq_lens=None, outputs=("Y", "Y_h", "Y_c"),
                    seed=0, **attrs):
    """One recurrent node. h0/c0: None (absent), "input" or "const" (a non-zero initializer)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits = {"W": rng.normal(0, 0.5, (dirs, g * hidden, inp)).astype(np.float32),
             "R": rng.normal(0, 0.5, (dirs, g * hidden, hidden)).astype(np.float32),
             "B": rng.normal(0, 0.3, (dirs, 2 * g * hidden)).astype(np.float32)}
    inputs = {"X": (batch, steps, inp) if layout else (steps, batch, inp)}
    state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    names = ["X", "W", "R", "B", ""]
    if seq_lens is not None:
        inits["seq"], names[4] = np.full(batch, seq_lens, np.int32), "seq"
    for pos, kind, name in ((5, h0, "h0"), (6, c0, "c0")):
        if kind is None:
            continue
        names += [""] * (pos - len(names)) + [name]
        if kind == "input":
            inputs[name] = state
        else:
            inits[name] = rng.uniform(-0.5, 0.5, state).astype(np.float32)
    if peepholes:
        names += [""] * (7 - len(names)) + ["P"]
        inits["P"] = rng.normal(0, 0.5, (dirs, 3 * hidden)).astype(np.float32)
    outs = list(outputs if op == "LSTM" else [o for o in outputs if o != "Y_c"])
    node = helper.make_node(op, names, outs, hidden_size=hidden, direction=direction, layout=layout, **attrs)
    return H.model([node], inputs, [o for o in outs if o], inits, opset=14)


def reference(m, feeds):
    if _layout(m):
        return ReferenceEvaluator(m).run(None, feeds)
    return H.ort_run(m, feeds)


def _layout(m) -> int:
    return next((a.i for a in m.graph.node[0].attribute if a.name == "layout"), 0)


def int8_build(m, samples):
    if _layout(m):
        ranges = {k: (float(min(s[k].min() for s in samples)), float(max(s[k].max() for s in samples)))
                  for k in samples[0]}
    else:
        ranges = collect_ranges(m, samples, method="minmax", progress=False)
    return tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8", int8_recurrent=True), samples=samples)


def check_recurrent(m, *, int8=True, n_samples=16):
    samples = H.samples_for(m, n=n_samples)
    feeds = samples[-1]
    refs = reference(m, feeds)
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert set(res.ops) <= UNROLLED_OPS, f"unexpected ops {set(res.ops) - UNROLLED_OPS}"
    for ref, got in zip(refs, H.tflite_run(res, feeds)):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    if not int8:
        return res, None
    q = int8_build(m, samples)
    assert q.ops.count("DEQUANTIZE") == len(q.outputs), f"float islands in {q.ops}"
    gots = H.tflite_run(q, feeds)
    for i, (ref, got) in enumerate(zip(refs, gots)):
        scale = H.output_scale(q, i)
        err = np.abs(got - ref).max() / scale
        assert err <= INT8_STEPS, f"int8 output {i}: {err:.1f} steps (scale {scale:.3g})"
    # SQNR over every output at once: Y_h alone can be a handful of values near zero
    sqnr = H.sqnr_db(np.concatenate([r.ravel() for r in refs]), np.concatenate([g.ravel() for g in gots]))
    assert sqnr >= INT8_MIN_SQNR, f"int8 SQNR {sqnr:.1f} dB"
    return res, q


CASES = {
    "lstm_forward": ("LSTM", {}),
    "lstm_reverse": ("LSTM", dict(direction="reverse")),
    "lstm_bidirectional": ("LSTM", dict(direction="bidirectional")),
    "lstm_states_in": ("LSTM", dict(h0="input", c0="input", direction="bidirectional")),
    "lstm_states_const": ("LSTM", dict(h0="const", c0="const")),
    "lstm_batchwise": ("LSTM", dict(layout=1, batch=2, h0="input", c0="input", direction="bidirectional")),
    "lstm_batchwise_b1": ("LSTM", dict(layout=1, direction="reverse")),
    "lstm_time_major_batch3": ("LSTM", dict(batch=3, h0="input")),
    "lstm_peepholes": ("LSTM", dict(peepholes=True, h0="input", c0="input")),
    "lstm_clip_peepholes": ("LSTM", dict(peepholes=True, clip=0.7, c0="input")),
    "lstm_input_forget": ("LSTM", dict(input_forget=1, h0="input", c0="input")),
    "lstm_seq_lens_full": ("LSTM", dict(seq_lens=6)),
    "lstm_only_y_h": ("LSTM", dict(outputs=("", "Y_h"))),
    "lstm_only_y": ("LSTM", dict(outputs=("Y",), direction="bidirectional")),
    "lstm_activations": ("LSTM", dict(activations=["Sigmoid", "Tanh", "Relu"])),
    "gru_forward": ("GRU", {}),
    "gru_linear_before_reset": ("GRU", dict(linear_before_reset=1)),
    "gru_lbr_bidirectional_states": ("GRU", dict(linear_before_reset=1, direction="bidirectional", h0="input")),
    "gru_reverse_h0": ("GRU", dict(direction="reverse", h0="input")),
    "gru_states_const": ("GRU", dict(h0="const")),
    "gru_batchwise": ("GRU", dict(layout=1, batch=2, h0="input")),
    "gru_clip": ("GRU", dict(clip=0.5, direction="bidirectional")),
    "rnn_forward": ("RNN", {}),
    "rnn_bidirectional_h0": ("RNN", dict(direction="bidirectional", h0="input")),
    "rnn_relu": ("RNN", dict(activations=["Relu"], hidden=6)),
    "rnn_batchwise": ("RNN", dict(layout=1, batch=2)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_recurrent(case):
    op, kw = CASES[case]
    res, _ = check_recurrent(recurrent_model(op, **kw))
    assert "FULLY_CONNECTED" in res.ops
    assert ("LOGISTIC" in res.ops) == (op != "RNN")


def test_gru_relu_float():
    """Relu in a GRU is unbounded; float is exact (int8 of an exploding state is not a goal)."""
    check_recurrent(recurrent_model("GRU", activations=["Relu", "Relu"]), int8=False)


def test_streaming_state_round_trip():
    """A one-step LSTM whose Y_h/Y_c feed the next call's initial states, 24 calls: the int8
    state stays close to onnxruntime's over the whole recorded sequence (no drift)."""
    m = recurrent_model("LSTM", steps=1, inp=6, hidden=8, h0="input", c0="input", outputs=("", "Y_h", "Y_c"))
    rng = np.random.default_rng(7)
    xs = rng.uniform(-2, 2, (48, 1, 1, 6)).astype(np.float32)
    calib, state = [], {"h0": np.zeros((1, 1, 8), np.float32), "c0": np.zeros((1, 1, 8), np.float32)}
    for x in xs[:24]:                     # calibration: a recorded sequence with its states
        feeds = {"X": x, **state}
        calib.append(feeds)
        h, c = H.ort_run(m, feeds)
        state = {"h0": h, "c0": c}
    q = int8_build(m, calib)
    ref_state = got_state = {"h0": np.zeros((1, 1, 8), np.float32), "c0": np.zeros((1, 1, 8), np.float32)}
    refs, gots = [], []
    for x in xs[24:]:                     # held-out continuation of the stream
        rh, rc = H.ort_run(m, {"X": x, **ref_state})
        gh, gc = H.tflite_run(q, {"X": x, **got_state})
        ref_state, got_state = {"h0": rh, "c0": rc}, {"h0": gh, "c0": gc}
        refs.append(rh)
        gots.append(gh)
    sqnr = H.sqnr_db(np.stack(refs), np.stack(gots))
    assert sqnr >= INT8_MIN_SQNR, f"streamed int8 h: {sqnr:.1f} dB"


@pytest.mark.parametrize("op,kw,needle", [
    ("LSTM", dict(seq_lens=3), "sequence_lens"),
    ("GRU", dict(activations=["HardSigmoid", "Tanh"]), "HardSigmoid"),
    ("RNN", dict(steps=MAX_STEPS + 1, inp=2, hidden=2), "time steps"),
])
def test_refused_with_a_reason(op, kw, needle):
    m = recurrent_model(op, **kw)
    with pytest.raises(UnsupportedOpsError) as err:
        tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert needle in str(err.value)


def test_non_constant_weights_refused():
    m = recurrent_model("RNN")
    w = next(i for i in m.graph.initializer if i.name == "W")
    m.graph.input.append(helper.make_tensor_value_info("W", w.data_type, list(w.dims)))
    m.graph.initializer.remove(w)
    with pytest.raises(UnsupportedOpsError) as err:
        tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert "W must be a constant" in str(err.value)


@pytest.mark.parametrize("quantize", ["none", "int8", "dynamic"])
def test_recurrent_weight_is_stored_once(quantize):
    """R is read by every step's FULLY_CONNECTED but stored once per direction (per-channel
    params depend on the weights alone): the file does not grow with the sequence length."""
    from core.litert import make_interpreter
    sizes = {}
    for steps in (4, 16):
        m = recurrent_model("LSTM", steps=steps, inp=8, hidden=32, direction="bidirectional")
        samples = H.samples_for(m, n=4)
        res = int8_build(m, samples) if quantize == "int8" else tflite.build(
            m, None, tflite.TFLiteOptions(quantize=quantize))
        weights = [d for d in make_interpreter(res.flatbuffer).get_tensor_details() if "/r__" in d["name"]]
        assert len(weights) == 2, [d["name"] for d in weights]
        sizes[steps] = len(res.flatbuffer)
    r_bytes = 2 * (4 * 32) * 32 * (4 if quantize == "none" else 1)   # both directions' R, stored dtype
    assert (sizes[16] - sizes[4]) / 12 < r_bytes, sizes


@pytest.mark.parametrize("how", ["default", "keep_float"])
def test_recurrent_node_float_by_default_or_when_kept(how):
    """int8 conversion keeps the recurrent node float unless int8_recurrent=True (onnxruntime's
    quantizer does the same; --keep-float NODE also works with --int8-recurrent): every op of the
    unrolled node is float (one island) and float-exact."""
    m = recurrent_model("LSTM", direction="bidirectional")
    samples = H.samples_for(m, n=8)
    ranges = collect_ranges(m, samples, method="minmax", progress=False)
    opts = (dict(int8_recurrent=True, keep_float=frozenset({m.graph.node[0].name}))
            if how == "keep_float" else {})
    q = tflite.build(m, ranges, tflite.TFLiteOptions(quantize="int8", **opts), samples=samples)
    refs = H.ort_run(m, samples[0])
    for ref, got in zip(refs, H.tflite_run(q, samples[0])):
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
