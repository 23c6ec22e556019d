"""Per-op microbenchmarks: int8 vs float32 single-layer TFLite graphs in the same LiteRT interpreter.

Why: the MobileNetV2 int8/float speedup is a sum over layers, and XNNPACK's int8 kernels are not
uniformly faster than its float ones on every CPU. This bench times one op at a time, in every
configuration that could matter, so a slow layer type (or a slow *form* of it) shows up directly:

  stem    the 3-channel 3x3/2 stem conv: SAME vs PAD+VALID, per-tensor, input channels padded
          to 4/8/16, and as a float island (int8 I/O, DEQUANTIZE -> float conv -> QUANTIZE)
  dw      DEPTHWISE_CONV_2D 3x3, stride 1/2, channel multiplier 1, MobileNetV2 shapes
  pw      CONV_2D 1x1 (pointwise), MobileNetV2 shapes
  variants  fused RELU6 or none; weights per-channel (QC8) or per-tensor (QS8); padding SAME or
            an explicit PAD op + VALID (what ONNX's symmetric pads at stride 2 need); input zero
            point -128 (after ReLU6) or 0; float island
  mnv2    every op of examples/models/mobilenet_v2 as its own graph (input edge, 52 convs, 10
          ADDs, MEAN, FULLY_CONNECTED), summed; plus the whole float / int8 / --float-head 3
          models. The sums give upper bounds on the speedup (``bounds``).

Each graph is written directly as a TGraph (bench/op_graphs.py) and serialized with the
converter's writer, so the bench measures kernels, not the converter's choices. I/O is NHWC in the
op's own dtype (no QUANTIZE/TRANSPOSE around it, except the input edge case). Timing: median (and
min) of --runs invokes, float and int8 of one config in alternating blocks so background load hits
both alike.

    .venv/bin/python bench/op_bench.py [--sections stem,dw,pw,mnv2] [--threads 1,2] [--runs 60]
                                       [--json out.json]

Prints JSON then a table; 'ratio' is float_ms / int8_ms (> 1: int8 is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convert_bench import block_times  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402  (the one SQNR definition)
from op_graphs import Layer, OpCase, build, build_case  # noqa: E402


# --- timing -----------------------------------------------------------------------------------
def _runner(model: bytes, threads: int):
    from core.litert import make_interpreter
    interp = make_interpreter(model, num_threads=threads)
    rng = np.random.default_rng(1)
    for d in interp.get_input_details():
        x = rng.integers(-128, 128, d["shape"]) if d["dtype"] == np.int8 else rng.normal(size=d["shape"])
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    return interp.invoke


def time_pair(layer: "Layer | OpCase", threads: int, runs: int, rounds: int = 5) -> dict:
    """Median and min ms of the float and int8 graphs of ``layer``, in alternating blocks."""
    make = build_case if isinstance(layer, OpCase) else build
    times = block_times({"float": _runner(make(layer, False), threads),
                         "int8": _runner(make(layer, True), threads)}, runs, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    return {"layer": layer.label, "kind": layer.kind if isinstance(layer, OpCase) else "conv", "threads": threads, "float_ms": med["float"], "int8_ms": med["int8"],
            "float_min_ms": low["float"], "int8_min_ms": low["int8"],
            "ratio": med["float"] / med["int8"], "ratio_min": low["float"] / low["int8"]}


# --- sections ---------------------------------------------------------------------------------
DW_SHAPES = [(112, 32, 1), (112, 96, 2), (56, 144, 1), (56, 144, 2), (28, 192, 1), (28, 192, 2),
             (14, 384, 1), (14, 576, 1), (14, 576, 2), (7, 960, 1)]
PW_SHAPES = [(112, 32, 16), (112, 16, 96), (56, 144, 24), (56, 24, 144), (28, 192, 32),
             (14, 384, 64), (14, 64, 384), (7, 960, 160), (7, 320, 1280)]


def section_dw() -> list[Layer]:
    """Every 3x3 depthwise shape of MobileNetV2 in its default form, plus each variant once
    (fused activation, weight granularity, padding form, input zero point) on two shapes."""
    base = [Layer(s, s, c, c, 3, st, True) for s, c, st in DW_SHAPES]
    variants = []
    for s, c, st in ((56, 144, 1), (56, 144, 2)):
        ref = Layer(s, s, c, c, 3, st, True)
        variants += [_with(ref, relu6=False), _with(ref, per_tensor=True), _with(ref, explicit_pad=True),
                     _with(ref, in_zp=0), _with(ref, island=True)]
    return base + variants


def section_pw() -> list[Layer]:
    base = [Layer(s, s, ci, co, 1, 1, False, relu6=co > ci) for s, ci, co in PW_SHAPES]
    ref = Layer(56, 56, 24, 144, 1, 1, False)
    return base + [_with(ref, relu6=False), _with(ref, per_tensor=True), _with(ref, in_zp=0)]


def section_stem() -> list[Layer]:
    """The 3-channel stem conv (3x3, stride 2): the layer where int8 loses most on x86. Forms:
    SAME or PAD+VALID, input channels zero-padded to 4/8/16 (wider int8 GEMM K), float island."""
    ref = Layer(224, 224, 3, 32, 3, 2, False, explicit_pad=True, in_zp=0)
    return [ref, _with(ref, explicit_pad=False), _with(ref, per_tensor=True),
            *(_with(ref, cin=c) for c in (4, 8, 16)), _with(ref, island=True)]


def section_mnv2() -> list:
    """Every op of the bench MobileNetV2 (examples/models/mobilenet_v2.py) as the converter emits
    it, in network order: the input edge, each Conv (+BN+ReLU6), each residual Add, the global
    average pool (MEAN) and the classifier (FULLY_CONNECTED)."""
    import onnx
    from examples.models import mobilenet_v2
    model = onnx.shape_inference.infer_shapes(mobilenet_v2.build())
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.input, *model.graph.value_info]}
    consumers = {i: n for n in model.graph.node for i in n.input}
    producers = {o: n for n in model.graph.node for o in n.output}
    items: list = [OpCase("input", tuple(shapes["input"]))]
    for node in model.graph.node:
        if node.op_type == "Add":
            n, c, h, w = shapes[node.input[0]]
            items.append(OpCase("add", (n, h, w, c)))
        elif node.op_type == "GlobalAveragePool":
            n, c, h, w = shapes[node.input[0]]
            items.append(OpCase("mean", (n, h, w, c)))
        elif node.op_type == "Gemm":
            items.append(OpCase("fc", (shapes[node.input[0]][1], _cout(model, node))))
        elif node.op_type == "Conv":
            items.append(_conv_layer(node, shapes, consumers, producers, model))
    return items


def _conv_layer(node, shapes, consumers, producers, model) -> Layer:
    import onnx
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    _, cin, h, w = shapes[node.input[0]]
    bn = consumers[node.output[0]]
    relu6 = bn.output[0] in consumers and consumers[bn.output[0]].op_type == "Clip"
    after_relu6 = node.input[0] in producers and producers[node.input[0]].op_type == "Clip"
    k, stride, group = attrs["kernel_shape"][0], attrs["strides"][0], attrs.get("group", 1)
    cout = cin if group > 1 else _cout(model, node)
    # The converter emits PAD + VALID where ONNX pads are not TFLite SAME (stride 2, even size).
    return Layer(h, w, cin, cout, k, stride, group > 1, relu6=relu6, explicit_pad=k > 1 and stride == 2,
                 in_zp=-128 if after_relu6 else 0)


def _cout(model, node) -> int:
    init = {t.name: t for t in model.graph.initializer}
    dims = init[node.input[1]].dims
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return dims[0] if trans_b else dims[1]
    return dims[0]


def _with(layer: Layer, **changes) -> Layer:
    return Layer(**{**layer.__dict__, **changes})


SECTIONS = {"dw": section_dw, "pw": section_pw, "stem": section_stem, "mnv2": section_mnv2}


# --- report -----------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = ("section", "layer", "thr", "f32 ms", "int8 ms", "ratio", "(min)")
    lines = [head] + [(r["section"], r["layer"], str(r["threads"]), f"{r['float_ms']:.3f}",
                       f"{r['int8_ms']:.3f}", f"{r['ratio']:.2f}x", f"{r['ratio_min']:.2f}x") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def summarize(rows: list[dict]) -> list[dict]:
    """Per section and thread count: summed float and int8 time, and the ratio of the sums."""
    out = []
    for (section, threads) in sorted({(r["section"], r["threads"]) for r in rows}):
        sel = [r for r in rows if r["section"] == section and r["threads"] == threads]
        f, q = sum(r["float_ms"] for r in sel), sum(r["int8_ms"] for r in sel)
        best = sum(min(r["float_ms"], r["int8_ms"]) for r in sel)
        out.append({"section": section, "threads": threads, "layers": len(sel), "float_ms_sum": f,
                    "int8_ms_sum": q, "ratio_of_sums": f / q, "best_of_each_ms_sum": best})
    return out


def invoke_overhead(threads: int) -> dict:
    """A 1x1x8 pointwise graph: what one invoke costs besides the kernel (subtracted per layer in
    ``bounds`` so the summed single-layer times do not count it 52 times)."""
    r = time_pair(Layer(1, 1, 8, 8, 1, 1, False), threads, 200)
    return {"threads": threads, "float_ms": r["float_ms"], "int8_ms": r["int8_ms"]}


def full_models(threads: int, runs: int) -> dict:
    """The whole bench MobileNetV2 as the converter builds it by default (float32 I/O in ONNX
    layout): float, all-int8, and the stem block kept float (``float_head=3``); latency, and SQNR
    against onnxruntime's float result on 8 held-out inputs (calibration: 32 other inputs)."""
    import onnxruntime as ort
    from converters import tflite
    from converters.calibrate import collect_ranges
    from core.litert import make_interpreter
    from examples.models import mobilenet_v2
    model = mobilenet_v2.build()
    rng = np.random.default_rng(0)
    calib, held = ([{"input": rng.normal(size=(1, 3, 224, 224)).astype(np.float32)} for _ in range(n)]
                   for n in (32, 8))
    ranges = collect_ranges(model, calib, progress=False)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, h)[0] for h in held]).astype(np.float64)
    variants = {"float": tflite.TFLiteOptions(quantize="none"), "int8": tflite.TFLiteOptions(),
                "int8_float_head3": tflite.TFLiteOptions(float_head=3)}
    invokes, sqnr = {}, {}
    for name, opts in variants.items():
        int8 = opts.quantize == "int8"     # as `ganglion convert` does: samples too (bias correction)
        flat = tflite.build(model, ranges if int8 else None, opts, samples=calib if int8 else None).flatbuffer
        interp = make_interpreter(flat, num_threads=threads)
        i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        outs = []
        for h in held:
            interp.set_tensor(i, h["input"])
            interp.invoke()
            outs.append(interp.get_tensor(o).copy())
        sqnr[f"{name}_sqnr_db"] = sqnr_db(ref, np.concatenate(outs))
        invokes[name] = _runner(flat, threads)
    times = block_times(invokes, runs)
    return {"threads": threads, **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
            **{f"{k}_min_ms": min(v) for k, v in times.items()}, **sqnr}


def bounds(doc: dict) -> list[dict]:
    """What the per-op numbers of the ``mnv2`` section allow, per thread count.

    Each op's float and int8 graphs are timed side by side (alternating blocks); one invoke's
    overhead is taken off every op. An op timed alone is a best case (its weights stay in cache
    between invokes; in the whole model they are fetched again), so the whole int8 model cannot be
    faster than the sum of its int8 ops alone. Hence, with F the whole float model timed in the
    same run, upper bounds on the speedup of an all-int8 (resp. per-op mixed) graph of this network:

      bound_all_int8      = F / sum(int8 ops)       (every op at its best, alone, in cache)
      bound_int8_convs    = F / sum(int8 convs)     (even granting every non-conv int8 op free)
      bound_mixed         = F / sum(min(float, int8) over all ops)   (conversions taken as free)

    ``predicted_speedup`` (sum of float ops over sum of int8 ops) shows how well parts add up."""
    out = []
    for t in sorted({r["threads"] for r in doc["rows"] if r["section"] == "mnv2"}):
        layers = [r for r in doc["rows"] if r["section"] == "mnv2" and r["threads"] == t]
        over = next(o for o in doc["overhead"] if o["threads"] == t)
        full = next(x for x in doc["full"] if x["threads"] == t)
        f = [max(r["float_ms"] - over["float_ms"], 0.0) for r in layers]
        q = [max(r["int8_ms"] - over["int8_ms"], 0.0) for r in layers]
        conv_q = sum(v for v, r in zip(q, layers) if r["kind"] == "conv")
        best = sum(map(min, f, q))
        out.append({"threads": t, "float_ops_ms": sum(f), "int8_ops_ms": sum(q), "int8_conv_ops_ms": conv_q,
                    "best_of_each_op_ms": best, "predicted_speedup": sum(f) / sum(q),
                    "float_full_ms": full["float_ms"], "int8_full_ms": full["int8_ms"],
                    "int8_float_head3_full_ms": full["int8_float_head3_ms"],
                    "measured_speedup_int8": full["float_ms"] / full["int8_ms"],
                    "measured_speedup_float_head3": full["float_ms"] / full["int8_float_head3_ms"],
                    "int8_sqnr_db": full["int8_sqnr_db"], "int8_float_head3_sqnr_db": full["int8_float_head3_sqnr_db"],
                    "bound_all_int8": full["float_ms"] / sum(q), "bound_int8_convs": full["float_ms"] / conv_q,
                    "bound_mixed": full["float_ms"] / best})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="int8 vs float per-op microbenchmarks (see module docstring).")
    p.add_argument("--sections", default="stem,dw,pw,mnv2")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = []
    for section in args.sections.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for layer in SECTIONS[section]():
                rows.append({"section": section, **time_pair(layer, threads, args.runs)})
    doc = {"runs": args.runs, "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
           "rows": rows, "sums": summarize(rows)}
    if "mnv2" in args.sections.split(","):
        doc["overhead"] = [invoke_overhead(int(t)) for t in args.threads.split(",")]
        doc["full"] = [full_models(int(t), args.runs) for t in args.threads.split(",")]
        doc["bounds"] = bounds(doc)
    print(json.dumps(doc, indent=2))
    print()
    print(table(rows))
    print()
    for s in doc["sums"]:
        print(f"{s['section']:5s} threads {s['threads']}: {s['layers']} layers, float {s['float_ms_sum']:.3f} ms, "
              f"int8 {s['int8_ms_sum']:.3f} ms, ratio of sums {s['ratio_of_sums']:.2f}x")
    for b in doc.get("bounds", []):
        print(f"MobileNetV2, threads {b['threads']}: whole models float {b['float_full_ms']:.3f} ms, int8 "
              f"{b['int8_full_ms']:.3f} ms ({b['measured_speedup_int8']:.2f}x), int8 --float-head 3 "
              f"{b['int8_float_head3_full_ms']:.3f} ms ({b['measured_speedup_float_head3']:.2f}x); SQNR int8 "
              f"{b['int8_sqnr_db']:.1f} dB, --float-head 3 {b['int8_float_head3_sqnr_db']:.1f} dB")
        print(f"  ops alone: float {b['float_ops_ms']:.3f} ms, int8 {b['int8_ops_ms']:.3f} ms (int8 convs "
              f"{b['int8_conv_ops_ms']:.3f} ms, faster-of-two {b['best_of_each_op_ms']:.3f} ms)")
        print(f"  upper bounds: all-int8 {b['bound_all_int8']:.2f}x (non-conv int8 ops free: "
              f"{b['bound_int8_convs']:.2f}x), per-op mixed {b['bound_mixed']:.2f}x")
    print(f"(load average {doc['loadavg_1m']:.2f} on {doc['cpus']} CPUs; ms are medians)")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
