"""Recurrent layers in LiteRT: our unrolled lowering (float, int8 with --int8-recurrent) vs the UNIDIRECTIONAL_SEQUENCE_LSTM
builtin (float, and its hybrid form: int8 weights, float activations), with onnxruntime as reference.

Why: an ONNX LSTM can become either LiteRT's sequence-LSTM builtin or an unrolled graph of
FULLY_CONNECTED / LOGISTIC / TANH / MUL / ADD per step (``converters/lower/recurrent.py``). This
bench puts both side by side in one run, on the shapes that matter:

  crnn      a CRNN-style bidirectional LSTM over a text line: T=40 I=128 H=128, and T=80 I=256 H=256
  gru       the same first shape as a bidirectional GRU (no builtin exists: ours only)
  stream    a streaming LSTM (a voice-activity detector's): T=1, I=64, H=128, state in/out, fed a
            recorded sequence one step per call (SQNR over the whole stream of Y_h)

The builtin's bidirectional form is what TensorFlow's converter emits for a Keras Bidirectional
layer: a forward and a backward UNIDIRECTIONAL_SEQUENCE_LSTM, REVERSE_V2 around the backward one,
CONCATENATION. Its state lives in *variable* tensors that persist across invocations, so the bench
calls ``reset_all_variables`` before each independent sequence (outside the timed invoke) and lets
the state carry over in the streaming case. Weights: seeded N(0, 1/fan_in); inputs N(0, 1).

    .venv/bin/python bench/recurrent_bench.py [--cases crnn,gru,stream] [--threads 2] [--runs 40]
                                              [--json out.json]

Prints JSON, then a table: median ms per invoke, SQNR (dB) against onnxruntime float on held-out
inputs, op count, file size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convert_bench import block_times  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402  (the one SQNR definition)

GATES = {"LSTM": 4, "GRU": 3}


def onnx_model(op: str, steps: int, inp: int, hidden: int, bidirectional: bool, stream: bool,
               seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    dirs, g = (2 if bidirectional else 1), GATES[op]
    w = rng.normal(0, 1 / np.sqrt(inp), (dirs, g * hidden, inp)).astype(np.float32)
    r = rng.normal(0, 1 / np.sqrt(hidden), (dirs, g * hidden, hidden)).astype(np.float32)
    b = rng.normal(0, 0.1, (dirs, 2 * g * hidden)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, 1, inp])]
    names, outs = ["X", "W", "R", "B"], ["Y", "Y_h"]
    if stream:
        names += ["", "h0", "c0"] if op == "LSTM" else ["", "h0"]
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [dirs, 1, hidden]) for n in names[5:]]
        outs = ["", "Y_h", "Y_c"] if op == "LSTM" else ["", "Y_h"]
    node = helper.make_node(op, names, outs, hidden_size=hidden,
                            direction="bidirectional" if bidirectional else "forward")
    graph = helper.make_graph([node], op.lower(), inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs if o],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    from converters import frontend
    return frontend.prepare(onnx.shape_inference.infer_shapes(m))


def ort_session(m: onnx.ModelProto, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def samples(m: onnx.ModelProto, n: int, seed: int, stream: bool) -> list[dict]:
    """Independent sequences, or (stream) one recorded sequence of single steps with the states
    onnxruntime carried between them: what a streaming model is calibrated on."""
    rng = np.random.default_rng(seed)
    x_shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    if not stream:
        return [{"X": rng.normal(size=x_shape).astype(np.float32)} for _ in range(n)]
    sess, out = ort_session(m, 1), []
    states = {vi.name: np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], np.float32)
              for vi in m.graph.input[1:]}
    for _ in range(n):
        feeds = {"X": rng.normal(size=x_shape).astype(np.float32), **states}
        out.append(feeds)
        states = dict(zip(states, sess.run(None, feeds)))
    return out


# --- ours -------------------------------------------------------------------------------------
def ours(m, calib, quantize: str):
    from converters import tflite
    from converters.calibrate import collect_ranges
    ranges = collect_ranges(m, calib, method="minmax", progress=False) if quantize == "int8" else None
    t0 = time.perf_counter()
    # int8 here means the recurrence itself in int8 (--int8-recurrent); by default an int8
    # conversion keeps recurrent nodes float, which for these one-node graphs is the float model
    options = tflite.TFLiteOptions(quantize=quantize, int8_recurrent=quantize == "int8")
    res = tflite.build(m, ranges, options, samples=calib)
    return res.flatbuffer, len(res.ops), time.perf_counter() - t0


# --- the builtin ------------------------------------------------------------------------------
def builtin_lstm(m: onnx.ModelProto, hybrid: bool) -> bytes:
    """[forward, backward] UNIDIRECTIONAL_SEQUENCE_LSTM (time-major) with REVERSE_V2 around the
    backward one and CONCATENATION; states in variable tensors. ``hybrid``: int8 weights
    (per-tensor symmetric) and float activations, the TF converter's dynamic-range form."""
    import ai_edge_litert.schema_py_generated as schema
    from converters.lower.context import options
    from converters.tgraph import QParams, TGraph, TOp, TTensor
    from converters.tflite.writer import serialize
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    w, r, b = inits["W"], inits["R"], inits["B"]
    dirs, hidden = w.shape[0], r.shape[2]
    steps, _, inp = (d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim)
    tg, variables = TGraph(), []

    def const(a, name):
        a = np.ascontiguousarray(a, np.float32)
        if hybrid and a.ndim == 2:
            scale = float(np.abs(a).max()) / 127
            q = np.clip(np.round(a / scale), -127, 127).astype(np.int8)
            return tg.add(TTensor(name, a.shape, "int8", data=q, quant=QParams.per_tensor(scale, 0)))
        return tg.add(TTensor(name, a.shape, "float32", data=a))

    x = tg.add(TTensor("X", (steps, 1, inp)))
    tg.inputs = [x]
    axis = tg.add(TTensor("axis0", (1,), "int32", data=np.array([0], np.int32)))
    outs = []
    for d in range(dirs):
        gi, go, gf, gc = (slice(k * hidden, (k + 1) * hidden) for k in range(4))   # ONNX order iofc
        bias = b[d, :4 * hidden] + b[d, 4 * hidden:]
        src = x
        if d == 1:
            src = tg.add(TTensor("x_rev", (steps, 1, inp)))
            tg.ops.append(TOp("REVERSE_V2", [x, axis], [src], options("ReverseV2Options")))
        state = [tg.add(TTensor(f"state{d}_{k}", (1, hidden))) for k in "hc"]
        variables += state
        ins = [src] + [const(w[d, s], f"w{d}{k}") for k, s in zip("ifco", (gi, gf, gc, go))]
        ins += [const(r[d, s], f"r{d}{k}") for k, s in zip("ifco", (gi, gf, gc, go))]
        ins += [-1, -1, -1] + [const(bias[s], f"b{d}{k}") for k, s in zip("ifco", (gi, gf, gc, go))]
        ins += [-1, -1] + state + [-1, -1, -1, -1]
        y = tg.add(TTensor(f"y{d}", (steps, 1, hidden)))
        tg.ops.append(TOp("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y], options(
            "UnidirectionalSequenceLSTMOptions", fusedActivationFunction=schema.ActivationFunctionType.TANH,
            timeMajor=True, asymmetricQuantizeInputs=hybrid)))
        if d == 1:
            back = tg.add(TTensor("y_rev", (steps, 1, hidden)))
            tg.ops.append(TOp("REVERSE_V2", [y, axis], [back], options("ReverseV2Options")))
            y = back
        outs.append(y)
    if len(outs) == 2:
        y = tg.add(TTensor("Y", (steps, 1, 2 * hidden)))
        tg.ops.append(TOp("CONCATENATION", outs, [y], options("ConcatenationOptions", axis=2)))
        outs = [y]
    tg.outputs = outs
    return _mark_variable(serialize(tg, description="builtin lstm bench"), variables)


def _mark_variable(flat: bytes, indices: list[int]) -> bytes:
    import flatbuffers
    import ai_edge_litert.schema_py_generated as schema
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    for i in indices:
        model.subgraphs[0].tensors[i].isVariable = True
    builder = flatbuffers.Builder(len(flat) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --- running ----------------------------------------------------------------------------------
class Runner:
    """One LiteRT model fed ONNX-named float inputs; ``reset`` clears builtin variable state."""

    def __init__(self, flat: bytes, threads: int, names: list[str], reset: bool):
        from core.litert import make_interpreter
        self.interp = make_interpreter(flat, num_threads=threads)
        self.reset = reset
        self.ins = {d["name"]: d["index"] for d in self.interp.get_input_details()}
        self.outs = [d["index"] for d in self.interp.get_output_details()]
        self.names = names

    def __call__(self, feeds: dict) -> list[np.ndarray]:
        if self.reset:
            self.interp.reset_all_variables()
        for name, value in feeds.items():
            if name in self.ins:
                self.interp.set_tensor(self.ins[name], value)
        self.interp.invoke()
        return [self.interp.get_tensor(i) for i in self.outs]


def fidelity(m, run, evals: list[dict], stream: bool, builtin: bool) -> float:
    """SQNR of the first output (Y, or Y_h for a stream) vs onnxruntime over the held-out inputs."""
    sess = ort_session(m, 1)
    refs, gots = [], []
    state = None
    for feeds in evals:
        refs.append(sess.run(None, feeds)[0])
        if stream and not builtin:          # ours: feed its own states back, as a device would
            feeds = {**feeds, **(state or {k: np.zeros_like(v) for k, v in feeds.items() if k != "X"})}
            outs = run(feeds)
            state = dict(zip([k for k in feeds if k != "X"], outs))
            gots.append(outs[0])
        else:                               # the builtin carries its state inside
            gots.append(run(feeds)[0])
    ref, got = np.stack(refs), np.stack(gots)
    return sqnr_db(ref.reshape(-1), got.reshape(ref.shape).reshape(-1))


def bench_case(name, op, steps, inp, hidden, bidir, stream, threads, runs) -> dict:
    m = onnx_model(op, steps, inp, hidden, bidir, stream)
    calib = samples(m, 48 if stream else 32, 1, stream)
    evals = samples(m, 48 if stream else 16, 2, stream)
    if stream:       # held-out: the ORT states of the held-out stream are only the reference's
        evals = [{"X": e["X"], **{k: v for k, v in e.items() if k != "X"}} for e in evals]
    row = {"case": name, "op": op, "T": steps, "I": inp, "H": hidden, "bidirectional": bidir,
           "stream": stream, "threads": threads, "variants": {}}
    variants = {}
    for quant in ("none", "int8"):
        flat, n_ops, secs = ours(m, calib, quant)
        variants[f"ours_{'float' if quant == 'none' else 'int8'}"] = (flat, n_ops, secs, False)
    if op == "LSTM" and not (stream and bidir):
        for hybrid in (False, True):
            variants["builtin_hybrid" if hybrid else "builtin_float"] = (builtin_lstm(m, hybrid), None, None, True)
    runners, feeds0 = {}, evals[0]
    for key, (flat, n_ops, secs, builtin) in variants.items():
        run = Runner(flat, threads, [], reset=builtin and not stream)
        runners[key] = run
        row["variants"][key] = {"ops": n_ops, "build_s": None if secs is None else round(secs, 2),
                                "bytes": len(flat), "sqnr_db": round(fidelity(m, run, evals, stream, builtin), 1)}
    sess = ort_session(m, threads)
    invokes = {k: (lambda r=r: r(feeds0)) for k, r in runners.items()}
    invokes["onnxruntime_float"] = lambda: sess.run(None, feeds0)
    times = block_times(invokes, runs, pause=0.05)
    for key, t in times.items():
        row["variants"].setdefault(key, {})["ms"] = round(statistics.median(t), 3)
        row["variants"][key]["min_ms"] = round(min(t), 3)
    return row


CASES = {
    "crnn": [("crnn_T40_H128", "LSTM", 40, 128, 128, True, False),
             ("crnn_T80_H256", "LSTM", 80, 256, 256, True, False)],
    "gru": [("gru_T40_H128", "GRU", 40, 128, 128, True, False)],
    "stream": [("stream_T1_H128", "LSTM", 1, 64, 128, False, True)],
}


def table(rows: list[dict]) -> str:
    lines = [f"{'case':<16} {'variant':<18} {'ms':>8} {'min ms':>8} {'SQNR dB':>8} {'ops':>6} {'KB':>7}"]
    for row in rows:
        for key, v in row["variants"].items():
            lines.append(f"{row['case']:<16} {key:<18} {v['ms']:>8.3f} {v['min_ms']:>8.3f} "
                         f"{v.get('sqnr_db', ''):>8} {v.get('ops') or '':>6} "
                         f"{(v['bytes'] / 1024 if 'bytes' in v else 0):>7.0f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="crnn,gru,stream")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = [bench_case(*case, args.threads, args.runs)
            for section in args.cases.split(",") for case in CASES[section]]
    doc = {"load_average": os.getloadavg(), "rows": rows}
    print(json.dumps(doc, indent=2))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
