"""How far the frontend folds exported shape arithmetic, and whether the float model still matches.

    .venv/bin/python bench/fold_bench.py swin_t.onnx shufflenet_dyn.onnx --input-shape x=1,3,224,224
    .venv/bin/python bench/fold_bench.py model.onnx --json /tmp/fold.json

Models come from PyTorch exports (big: never committed). With a torch environment, e.g.:

    python -c "import torch, torchvision; m = torchvision.models.swin_t().eval(); \\
        torch.onnx.export(m, (torch.randn(1, 3, 224, 224),), 'swin_t.onnx', opset_version=17, \\
        dynamo=False, input_names=['x'], output_names=['y'])"

(``shufflenet_v2_x1_0`` with ``dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}}`` for the
dynamic-batch case). Per model: ONNX nodes, IR nodes left after folding, tensors of unknown shape
before and after folding (after ONNX's own whole-model inference), the sweeps ``fold.settle``
took and its time, then the float TFLite model against onnxruntime on one seeded input (SQNR).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

from converters import frontend, tflite  # noqa: E402
from converters.frontend import fold  # noqa: E402
from converters.frontend.to_ir import to_graph as ir_graph  # noqa: E402
from converters.verify.metrics import sqnr_db  # noqa: E402
from core.litert import make_interpreter  # noqa: E402


def measure(path: Path, shapes: dict) -> dict:
    model = frontend.load_model(path, shapes)
    graph = ir_graph(model)
    unknown_before = sum(t.shape is None for t in graph.tensors.values())
    start = time.perf_counter()
    sweeps = fold.settle(graph)
    seconds = time.perf_counter() - start
    unknown_after = sum(graph.tensors[o].shape is None for n in graph.nodes for o in n.outputs if o)
    feeds = {vi.name: np.random.default_rng(0).normal(size=[d.dim_value for d in vi.type.tensor_type.shape.dim])
             .astype(np.float32) for vi in model.graph.input}
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    result = tflite.build(model, None, tflite.TFLiteOptions(quantize="none"))
    interp = make_interpreter(result.flatbuffer)
    for spec in result.inputs:
        interp.set_tensor(spec.index, feeds[spec.name])
    interp.invoke()
    got = interp.get_tensor(result.outputs[0].index)
    return {"model": path.name, "onnx_nodes": len(model.graph.node), "ir_nodes": len(graph.nodes),
            "unknown_before": unknown_before, "unknown_after": unknown_after, "sweeps": sweeps,
            "fold_s": round(seconds, 2), "tflite_ops": len(result.ops),
            "float_sqnr_db": round(float(sqnr_db(ref, got)), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=D0,D1,... (all models)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    shapes = {k: [int(d) for d in v.split(",")] for k, v in (s.split("=") for s in args.input_shape)}
    rows = [measure(path, shapes) for path in args.models]
    cols = list(rows[0])
    print("  ".join(f"{c:>14}" for c in cols))
    for row in rows:
        print("  ".join(f"{row[c]!s:>14}" for c in cols))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
