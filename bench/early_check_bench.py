"""What reusing the early unsupported-op check's IR saves in ``api.convert``.

    .venv/bin/python bench/early_check_bench.py shufflenet_dyn.onnx swin_t.onnx --input-shape x=1,3,224,224
    .venv/bin/python bench/early_check_bench.py model.onnx --json /tmp/early.json

``api.convert`` checks every node right after loading (``check_lowerable``: frontend + passes),
then ``tflite.build`` lowers. Per model, side by side in one run and alternating, the float build
both ways: the IR handed over (``graph=``, what ``api.convert`` does) and built again (the old
path). Seconds are the median of ``--repeat`` runs; both flatbuffers must be byte-identical.
Models: PyTorch exports (see ``bench/fold_bench.py`` for the commands), never committed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters import api, frontend, tflite  # noqa: E402
from converters.config import ConvertConfig, parse_shape  # noqa: E402

OPTIONS = tflite.TFLiteOptions(quantize="none")


def once(model, cfg, reuse: bool) -> tuple[float, bytes]:
    start = time.perf_counter()
    graph = api.check_lowerable(model, cfg)
    result = tflite.build(model, None, OPTIONS, graph=graph if reuse else None)
    return time.perf_counter() - start, result.flatbuffer


def measure(path: Path, shapes: dict, repeat: int) -> dict:
    model = frontend.load_model(path, shapes)
    cfg = ConvertConfig(model=path, output=Path("unused.tflite"), quantize="none")
    times = {True: [], False: []}
    flats = {}
    for _ in range(repeat):
        for reuse in (False, True):
            seconds, flats[reuse] = once(model, cfg, reuse)
            times[reuse].append(seconds)
    old, new = statistics.median(times[False]), statistics.median(times[True])
    return {"model": path.name, "check+build s (built twice)": round(old, 2),
            "check+build s (reused)": round(new, 2), "ratio": round(new / old, 2),
            "identical": flats[True] == flats[False]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--input-shape", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    shapes = dict(parse_shape(s) for s in args.input_shape)
    rows = [measure(p, {k: list(v) for k, v in shapes.items()}, args.repeat) for p in args.models]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
