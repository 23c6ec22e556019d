"""Where does our int8 model first fall behind another quantizer's? Per-layer SQNR of two candidates
against the same float model, side by side in graph order.

    .venv/bin/python bench/layer_gap.py --zoo-model /work/zoo3/ppocr_rec_v4 --ours ours.gpk \
        --other ort_percentile.onnx [--limit 20] [--gap 1.0] [--json out.json]

``--ours``: a .gpk (its TFLite model, read through the manifest's tensor map) or a QDQ .onnx;
``--other``: typically onnxruntime's ``quantize_static`` output (``bench/zoo_steps.py ort-quantize
MODEL_DIR Percentile out.onnx``), read by tensor name. Both go through ``ganglion verify
--per-layer`` (``converters.verify.per_layer``) on the folder's holdout.npz, with the input shapes
meta.json pins. Printed per tensor the two SQNRs (dB, each tensor against the float model, error
accumulated from the input), their difference and each layer's own SQNR (the noise it adds); the
first tensor where ours trails by more than ``--gap`` dB is marked: that layer, or the ranges
that feed it, is where to look. Intermediate SQNRs are steadier evidence than the output's on a
model whose output is a Softmax (a few flipped samples dominate its error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import api  # noqa: E402  (after the path: the checkout's converter)


def per_layer(candidate: Path, model_dir: Path, shapes: dict, limit: int) -> dict[str, dict]:
    report = api.verify(candidate, model_dir / "model.onnx", model_dir / "holdout.npz", per_layer=True,
                        limit=limit, progress=False, input_shapes=shapes or None)
    return {row.tensor: row.to_dict() for row in report.per_layer}


def rows(model_dir: Path, ours: dict, other: dict) -> list[dict]:
    """Tensors both candidates measured, in the float graph's order."""
    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    order = [o for node in graph.node for o in node.output if o in ours and o in other]
    return [{"tensor": t, "op": ours[t]["op"], "ours": ours[t]["sqnr_db"], "other": other[t]["sqnr_db"],
             "gap": ours[t]["sqnr_db"] - other[t]["sqnr_db"], "own_ours": ours[t]["own_sqnr_db"],
             "own_other": other[t]["own_sqnr_db"]} for t in order]


def table(found: list[dict], gap: float) -> str:
    lines = [f"{'tensor':<32} {'op':<22} {'ours':>7} {'other':>7} {'gap':>6} {'own ours':>9} {'own other':>9}"]
    first = next((r["tensor"] for r in found if r["gap"] < -gap), None)
    for r in found:
        mark = "  <- first gap" if r["tensor"] == first else ""
        lines.append(f"{r['tensor'][:32]:<32} {r['op'][:22]:<22} {r['ours']:7.2f} {r['other']:7.2f} {r['gap']:6.2f} "
                     f"{r['own_ours']:9.1f} {r['own_other']:9.1f}{mark}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo-model", type=Path, required=True, help="a zoo folder (model.onnx, holdout.npz, meta.json)")
    p.add_argument("--ours", type=Path, required=True)
    p.add_argument("--other", type=Path, required=True)
    p.add_argument("--limit", type=int, default=20, help="holdout samples (default 20)")
    p.add_argument("--gap", type=float, default=1.0, help="dB behind that marks the first gap (default 1)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    meta = json.loads((a.zoo_model / "meta.json").read_text())
    shapes = {k: tuple(v) for k, v in meta.get("input_shapes", {}).items()}
    found = rows(a.zoo_model, per_layer(a.ours, a.zoo_model, shapes, a.limit),
                 per_layer(a.other, a.zoo_model, shapes, a.limit))
    print(table(found, a.gap))
    if a.json:
        a.json.write_text(json.dumps({"model": a.zoo_model.name, "ours": str(a.ours), "other": str(a.other),
                                      "limit": a.limit, "rows": found}, indent=1))


if __name__ == "__main__":
    main()
