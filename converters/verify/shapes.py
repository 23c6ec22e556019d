"""The input shapes a candidate was converted with, to pin a dynamic float reference the same way.

A model exported with dynamic dimensions (``[N, 3, H, W]``) was converted with ``--input-shape``;
its artifact is static. ``verify`` runs the float reference on the same data, so it needs the
same pinning; the shapes are read from the candidate instead of asking the user again:

    .gpk       the manifest's ``inputs`` (ONNX order; an ``nhwc`` entry is turned back to NCHW)
    .tflite    the interpreter's input details (by name; a 4-D NHWC shape is turned back when
               the reference's fixed dims say so)
    QDQ .onnx  the candidate graph's inputs (a dimension it leaves dynamic too pins nothing: the
               reference then runs at the data's shape, as the candidate does)

``pin(reference, candidate_shapes, given)`` -> {input: shape} for the reference inputs that have
a dynamic dimension, ``given`` (``--input-shape``) first.
"""
from __future__ import annotations

import onnx

from converters.verify.compare import candidate_onnx
from core.litert import make_interpreter

NHWC_TO_NCHW = (0, 3, 1, 2)


def candidate_shapes(kind: str, data: bytes, manifest: dict | None) -> dict[str, tuple[list[int], bool]]:
    """{input name: (shape, maybe_nhwc)} of the candidate; maybe_nhwc: the layout is not recorded."""
    if manifest and manifest.get("inputs"):
        found = {}
        for entry in manifest["inputs"]:
            shape = [int(d) for d in entry.get("shape") or []]
            if entry.get("layout") == "nhwc" and len(shape) == 4:
                shape = [shape[i] for i in NHWC_TO_NCHW]
            found[entry["name"]] = (shape, False)
        return found
    if kind == "tflite":
        details = make_interpreter(data).get_input_details()
        return {d["name"]: ([int(x) for x in d["shape"]], True) for d in details}
    model = candidate_onnx(data)
    inits = {i.name for i in model.graph.initializer}
    return {vi.name: ([d.dim_value for d in vi.type.tensor_type.shape.dim], False)
            for vi in model.graph.input if vi.name not in inits}


def pin(reference: onnx.ModelProto, found: dict[str, tuple[list[int], bool]],
        given: dict | None = None) -> dict[str, list[int]]:
    """Shapes for the reference's dynamic inputs: ``given`` first, else the candidate's when its
    rank and fixed dims agree (an NHWC candidate shape is tried in NCHW order too)."""
    given = dict(given or {})
    inits = {i.name for i in reference.graph.initializer}
    pinned = dict(given)
    for vi in reference.graph.input:
        if vi.name in inits or vi.name in given or vi.name not in found:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]
        if None not in dims:
            continue
        shape, maybe_nhwc = found[vi.name]
        options = [shape] + ([[shape[i] for i in NHWC_TO_NCHW]] if maybe_nhwc and len(shape) == 4 else [])
        for option in options:
            if any(s <= 0 for s in option):   # dynamic in the candidate too (a QDQ .onnx): nothing to pin from
                continue
            if len(option) == len(dims) and all(d is None or d == s for d, s in zip(dims, option)):
                pinned[vi.name] = option
                break
    return pinned
