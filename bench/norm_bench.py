"""Normalizations in int8 TFLite: the int8 chain vs float between int8 neighbours (tflite/precision.py's
NORM rule), fidelity and LiteRT latency side by side.

Each case is a small block built here with onnx.helper (seeded weights; inputs with an outlier
channel, as trained transformers have), calibrated on 16 samples and measured on 8 others:

  ln_tokens     Add(shift) -> LayerNormalization -> MatMul, [1, 197, 384] (a ViT-S block's LN)
  ln_written    the same LayerNorm written out op by op (opset 13: ReduceMean .. Div, Mul gamma,
                Add beta), as exporters without the op leave it (ganglion::Normalize)
  instance_norm Conv 3x3 -> InstanceNormalization -> Relu -> Conv 3x3, [1, 32, 64, 64] (a style
                transfer / GAN block: the normalization over a large spatial map)

Per case two int8 builds of the same ranges: ``float`` (the default: the normalization float between
int8 neighbours) and ``int8`` (the NORM rule off: its MEAN / SUB / MUL / RSQRT chain in int8).
SQNR (dB) of the block output against onnxruntime's float run; latency through
``litert_latency_bench.measure`` (interleaved in one process, XNNPACK on; ratio = float / int8).

    .venv/bin/python bench/norm_bench.py [--cases ln_tokens,instance_norm] [--threads 1]
        [--clock cpu] [--rounds 6] [--runs 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from converters import tflite  # noqa: E402  (after the path: the checkout's converter)
from converters.calibrate import collect_ranges  # noqa: E402
from converters.tflite import precision  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from core.litert import make_interpreter  # noqa: E402
from litert_latency_bench import measure, timing_options  # noqa: E402


def _model(nodes, shape, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "norm_bench", [helper.make_tensor_value_info("x", 1, list(shape))],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ln_block(written: bool) -> tuple[onnx.ModelProto, tuple]:
    rng, t, c = np.random.default_rng(0), 197, 384
    shift = np.zeros(c, np.float32)
    shift[7] = 8.0                      # one outlier channel
    inits = {"shift": shift, "g": rng.uniform(0.5, 1.5, c), "b": rng.normal(0, 0.2, c),
             "w": rng.normal(0, 0.05, (c, c))}
    nodes = [helper.make_node("Add", ["x", "shift"], ["h"])]
    if written:
        inits["eps"] = np.float32(1e-6)
        for op, ins, out in [("ReduceMean", ["h"], "mu"), ("Sub", ["h", "mu"], "d"), ("Mul", ["d", "d"], "d2"),
                             ("ReduceMean", ["d2"], "var"), ("Add", ["var", "eps"], "ve"), ("Sqrt", ["ve"], "sd"),
                             ("Div", ["d", "sd"], "nd"), ("Mul", ["nd", "g"], "ng"), ("Add", ["ng", "b"], "n")]:
            nodes.append(helper.make_node(op, ins, [out], **({"axes": [-1]} if op == "ReduceMean" else {})))
    else:
        nodes.append(helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1, epsilon=1e-6))
    nodes.append(helper.make_node("MatMul", ["n", "w"], ["y"]))
    return _model(nodes, (1, t, c), inits, 13 if written else 17), (1, t, c)


def instance_norm_block() -> tuple[onnx.ModelProto, tuple]:
    rng, c = np.random.default_rng(0), 32
    inits = {"w1": rng.normal(0, 0.2, (c, 3, 3, 3)), "w2": rng.normal(0, 0.05, (c, c, 3, 3)),
             "g": rng.uniform(0.5, 1.5, c), "b": rng.normal(0, 0.2, c)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("InstanceNormalization", ["h", "g", "b"], ["n"], epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return _model(nodes, (1, 3, 64, 64), inits), (1, 3, 64, 64)


CASES = {"ln_tokens": lambda: ln_block(False), "ln_written": lambda: ln_block(True),
         "instance_norm": instance_norm_block}


def _samples(shape, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(n)]


def _run(res, sample: dict) -> np.ndarray:
    """``res`` (float I/O) in LiteRT on one sample, in ONNX layout."""
    interp = make_interpreter(res.flatbuffer, num_threads=1)
    (inp,), (out,) = res.inputs, res.outputs
    x = sample[inp.name]
    interp.set_tensor(inp.index, np.ascontiguousarray(x.transpose(0, 2, 3, 1) if inp.layout == "nhwc" else x))
    interp.invoke()
    y = interp.get_tensor(out.index)
    return y.transpose(0, 3, 1, 2) if out.layout == "nhwc" else y


def builds(m: onnx.ModelProto, calib: list[dict]) -> dict:
    """Both int8 builds of ``m`` on the same ranges: the NORM rule on (default) and off."""
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    options = tflite.TFLiteOptions(quantize="int8")
    out = {"float": tflite.build(m, ranges, options, samples=calib)}
    rule = precision.normalizations
    precision.normalizations = lambda tg: set()
    try:
        out["int8"] = tflite.build(m, ranges, options, samples=calib)
    finally:
        precision.normalizations = rule
    return out


def case(name: str, args, scratch: Path) -> dict:
    m, shape = CASES[name]()
    calib, holdout = _samples(shape, 16, 0), _samples(shape, 8, 1)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, s)[0].ravel() for s in holdout])
    row, paths = {}, {}
    for kind, res in builds(m, calib).items():
        got = np.concatenate([_run(res, s).ravel() for s in holdout])
        paths[kind] = scratch / f"{name}_{kind}.tflite"
        paths[kind].write_bytes(res.flatbuffer)
        row[kind] = {"sqnr_db": round(float(sqnr_db(ref, got)), 2), "ops": len(res.ops)}
    timing = measure({"int8": paths["int8"], "float": paths["float"]}, args.threads, args.rounds, args.runs,
                     clock=args.clock)
    for kind in row:
        row[kind].update(median_ms=round(timing[kind]["median_ms"], 3),
                         partitions=timing[kind]["delegate_partitions"])
    row["latency_ratio"] = round(timing["float"]["ratio"], 3)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    timing_options(p, runs=30)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {name: case(name, args, Path(tmp)) for name in args.cases.split(",")}
    doc = {"threads": args.threads, "clock": args.clock, "loadavg_1m": os.getloadavg()[0], "cases": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    print(f"{'case':<14} {'SQNR int8 chain':>16} {'SQNR float norm':>16} {'ms int8':>8} {'ms float':>9} "
          f"{'ratio':>6} {'partitions':>11}")
    for name, r in rows.items():
        print(f"{name:<14} {r['int8']['sqnr_db']:>16.2f} {r['float']['sqnr_db']:>16.2f} {r['int8']['median_ms']:>8.3f} "
              f"{r['float']['median_ms']:>9.3f} {r['latency_ratio']:>6.3f} "
              f"{r['int8']['partitions']:>5}/{r['float']['partitions']:<5}")
    print(f"{args.threads} threads, {args.clock} clock, load average {doc['loadavg_1m']:.1f}")


if __name__ == "__main__":
    main()
