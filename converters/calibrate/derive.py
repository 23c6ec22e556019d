"""Tensors whose min and max the calibration pass need not reduce: exact functions of other tensors'.

Reducing a tensor in onnxruntime reads all of it twice (ReduceMin, ReduceMax) plus once for the
NaN check; on a YOLO-style detector the reductions are about a quarter of the pass. Some tensors'
extremes follow exactly from their inputs', because they hold the same float values:

    Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity,
    DepthToSpace, SpaceToDepth, Expand   the input's values, moved (or repeated)
    Concat                                the union of its inputs' values
    Relu                                  max(x, 0), monotonic: the ends map to the ends

so with the min/max observer their ranges are computed from their sources' after the pass
(``derivable`` picks them, ``fill`` computes them), bit for bit what a reduction would find
(NaN and Inf are dropped by the observers either way). A YOLOv8n's C2f Concats alone are 15% of
its activation bytes. Other observers need every value (histograms), so they reduce everything
but the outputs of the copies that hold each value of their input once (``copies``): a copy's
histogram is its source's, so the two tensors share one observer.
"""
from __future__ import annotations

import onnx

from converters.calibrate import observers

COPIES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                    "DepthToSpace", "SpaceToDepth", "Expand"})


def derivable(model: onnx.ModelProto, reduced: set[str], sources: set[str], keep=frozenset()) -> dict[str, tuple]:
    """{tensor: (op type, [source tensors])} for the ``reduced`` tensors that ``fill`` can compute
    from ``sources`` (the observed tensors, each with a min/max observer), in graph order;
    ``keep``: tensors to reduce anyway (their per-channel ranges are wanted)."""
    found: dict[str, tuple] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        out = node.output[0]
        if out not in reduced or out in keep:
            continue
        if node.op_type in COPIES or node.op_type == "Relu":
            inputs = [node.input[0]]
        elif node.op_type == "Concat":
            inputs = list(node.input)
        else:
            continue
        if all(s in sources for s in inputs):
            found[out] = (node.op_type, inputs)
    return found


# Ops whose output holds exactly the values of their input, each as often (``COPIES`` but Expand,
# which repeats them): every per-sample summary of the two, a histogram included, is the same.
SAME_VALUES = COPIES - {"Expand"}


def copies(model: onnx.ModelProto, observed: set[str], sources: set[str], keep=frozenset()) -> dict[str, str]:
    """{tensor: the tensor whose values it holds} for the ``observed`` tensors made by a
    ``SAME_VALUES`` op from one of ``sources`` (followed back through copies of copies), but
    those of ``keep`` (graph outputs, whose values the caller reads). A histogram observer of the
    source serves the copy too: the copy need not leave onnxruntime or be binned again."""
    found: dict[str, str] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1 or node.op_type not in SAME_VALUES:
            continue
        out, source = node.output[0], node.input[0]
        if out in observed and out not in keep and (source in sources or source in found):
            found[out] = found.get(source, source)
    return found


def fill(found: dict, derived: dict[str, tuple]) -> None:
    """Add a min/max observer to ``found`` (observers by tensor, the pass's) for each tensor of
    ``derived``, computed from its sources' (graph order: a source may be derived too)."""
    for name, (op, sources) in derived.items():
        obs = observers.MinMax()
        for source in sources:
            obs.lo, obs.hi = min(obs.lo, found[source].lo), max(obs.hi, found[source].hi)
        if op == "Relu" and obs.seen:
            obs.lo, obs.hi = max(obs.lo, 0.0), max(obs.hi, 0.0)
        found[name] = obs
