"""Which side of the float/int8 conversion a graph-edge TRANSPOSE should run on, by channel count.

    .venv/bin/python bench/edge_transpose_bench.py [--threads 2] [--rounds 8] [--runs 100] [--clock wall|cpu]
        [--json out.json]

An NCHW float input reaches a channels-last int8 network through QUANTIZE and a TRANSPOSE; the
TRANSPOSE can move int8 bytes (QUANTIZE first) or float bytes (TRANSPOSE first). Outputs mirror it
(int8 TRANSPOSE then DEQUANTIZE, or DEQUANTIZE then float TRANSPOSE). Each case is a two-op model
written by the project's own writer (``converters.tflite.writer.serialize``), and the two orders of
one case are timed interleaved in one LiteRT interpreter (``litert_latency_bench.measure``; XNNPACK
on, as on a device). The table gives the float order's time over the int8 order's: below 1, the
float side wins. ``converters/tflite/io_edges.NARROW`` is read off this table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from litert_latency_bench import measure, timing_options  # noqa: E402  (after the path)

from converters.lower.context import options  # noqa: E402
from converters.tflite.writer import serialize  # noqa: E402
from converters.tgraph import QParams, TGraph, TOp, TTensor  # noqa: E402

TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
# (edge, N, C, H, W): inputs of image-like channel counts and feature inputs, outputs of heads;
# H*W is chosen so each case moves about the same number of elements (~150 K)
CASES = [("input", 1, c, hw, hw) for c, hw in ((2, 224), (3, 224), (4, 192), (8, 136), (16, 96), (32, 68))] + \
        [("output", 1, c, hw, hw) for c, hw in ((3, 224), (8, 136), (21, 84), (64, 48))]


def edge_model(edge: str, shape: tuple[int, ...], float_transpose: bool) -> bytes:
    """QUANTIZE + TRANSPOSE (input edge) or TRANSPOSE + DEQUANTIZE (output edge), in one order."""
    n, c, h, w = shape
    nchw, nhwc = (n, c, h, w), (n, h, w, c)
    q = QParams.per_tensor(0.02, 3)
    tg = TGraph()
    src_shape, dst_shape, perm = (nchw, nhwc, TO_NHWC) if edge == "input" else (nhwc, nchw, TO_NCHW)
    src_type, dst_type = ("float32", "int8") if edge == "input" else ("int8", "float32")
    src = tg.add(TTensor("x", src_shape, src_type, quant=q if src_type == "int8" else None))
    dst = tg.add(TTensor("y", dst_shape, dst_type, quant=q if dst_type == "int8" else None))
    perm_t = tg.add(TTensor("perm", (4,), "int32", data=np.array(perm, np.int32)))
    moved_type = "float32" if float_transpose else "int8"
    # the intermediate: transposed when the TRANSPOSE comes first, else in the source layout
    transpose_first = float_transpose == (edge == "input")
    mid = tg.add(TTensor("mid", dst_shape if transpose_first else src_shape, moved_type,
                         quant=q if moved_type == "int8" else None))
    convert = "QUANTIZE" if edge == "input" else "DEQUANTIZE"
    transpose = TOp("TRANSPOSE", [src if transpose_first else mid, perm_t], [mid if transpose_first else dst],
                    options("TransposeOptions"))
    conversion = TOp(convert, [mid if transpose_first else src], [dst if transpose_first else mid])
    tg.ops = [transpose, conversion] if transpose_first else [conversion, transpose]
    tg.inputs, tg.outputs = [src], [dst]
    return serialize(tg)


def run(threads: int, rounds: int, runs: int, clock: str = "wall") -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for edge, *shape in CASES:
            paths = {}
            for kind in ("int8", "float"):
                paths[kind] = Path(tmp) / f"{edge}_{'x'.join(map(str, shape))}_{kind}.tflite"
                paths[kind].write_bytes(edge_model(edge, tuple(shape), kind == "float"))
            result = measure(paths, threads, rounds, runs, clock=clock)
            rows.append({"edge": edge, "shape_nchw": shape, "channels": shape[1],
                         "int8_ms": result["int8"]["median_ms"], "float_ms": result["float"]["median_ms"],
                         "int8_fast_ms": result["int8"]["fast_decile_ms"],
                         "float_fast_ms": result["float"]["fast_decile_ms"],
                         "paired_ratio": result["float"]["ratio"],
                         "fast_ratio": result["float"]["fast_decile_ratio"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'edge':<7} {'NCHW shape':<18} {'int8 ms':>8} {'float ms':>9} {'fast 10% int8':>14} "
             f"{'float':>7} {'float/int8 paired':>18} {'fast 10%':>9}"]
    for r in rows:
        lines.append(f"{r['edge']:<7} {str(r['shape_nchw']):<18} {r['int8_ms']:>8.4f} {r['float_ms']:>9.4f} "
                     f"{r['int8_fast_ms']:>14.4f} {r['float_fast_ms']:>7.4f} {r['paired_ratio']:>18.3f} "
                     f"{r['fast_ratio']:>9.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="graph-edge TRANSPOSE: int8 or float side (module doc)")
    timing_options(p, runs=100)
    args = p.parse_args(argv)
    rows = run(args.threads, args.rounds, args.runs, args.clock)
    doc = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "clock": args.clock,
           "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "cases": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    print(table(rows))
    print(f"{args.threads} threads, {args.clock} clock; load average {doc['loadavg_1m']:.1f} on {doc['cpus']} CPUs")


if __name__ == "__main__":
    main()
