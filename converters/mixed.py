"""Automatic mixed precision: choose which ONNX nodes to keep in float (``--auto-keep-float N``).

The per-layer report (``converters.verify.per_layer``) ranks layers by the error each one *adds*.
That ranking alone can pick the wrong layer: a layer whose int8 *input* was crushed (one huge
channel sharing a per-tensor scale with small ones) looks guilty, yet keeping it float does not
help, because the damage happened where its input was quantized. So the choice is greedy and
measured, N steps of:

    1. build the int8 model with the nodes kept so far, rank its layers;
    2. candidates: each of the worst few layers alone, and together with the layer that
       produces its input (keeping both removes that quantization point);
    3. build each candidate and measure the output SQNR against onnxruntime on the samples;
    4. keep the best candidate, if it improves on the current model at all.

A layer is the span of ONNX nodes between a TFLite-visible tensor and its nearest visible
ancestors (Conv+Relu fused into one TFLite op is one layer), and is always kept whole.
"""
from __future__ import annotations

import functools

import onnx

from converters import tflite, verify
from converters.frontend.names import name_nodes, node_names
from converters.verify import per_layer

CANDIDATE_LAYERS = 3     # worst layers tried per step (each alone and with its input's producer)
MAX_SAMPLES = 32         # samples per trial measurement: enough to rank, cheap to repeat


def choose(model: onnx.ModelProto, ranges: dict, samples: list[dict], steps: int, *,
           layout: str = "onnx", keep: frozenset[str] = frozenset(), float_head: int = 0,
           progress: bool = False) -> set[str]:
    """ONNX node names to keep in float, on top of ``keep`` and the first ``float_head`` layers
    (none of them included in the result)."""
    samples = samples[:MAX_SAMPLES]
    model = _named(model)
    chosen: set[str] = set()
    measure = functools.partial(_measure, model, ranges, samples, layout, float_head)
    score, trial = measure(keep)
    # every build has the same head (it is counted before anything is kept float)
    keep = keep | set(trial.float_head)
    for _ in range(steps):
        best = None
        for span in _candidates(model, ranges, samples, trial, keep | chosen, progress):
            new_score, new_trial = measure(keep | chosen | span)
            if best is None or new_score > best[0]:
                best = (new_score, span, new_trial)
        if best is None or best[0] <= score:
            break                       # nothing left that float would improve
        score, span, trial = best
        chosen |= span
    return chosen


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy whose nodes all carry the name --keep-float takes (frontend/names.py),
    so the spans below can go by ``node.name``."""
    if [n.name for n in model.graph.node] == node_names(model):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    name_nodes(copy.graph)
    return copy


def _measure(model, ranges, samples, layout, float_head, keep):
    """(output SQNR dB of an int8 build keeping ``keep`` and the head float, that build)."""
    options = tflite.TFLiteOptions(quantize="int8", layout=layout, keep_float=frozenset(keep),
                                   float_head=float_head)
    result = tflite.build(model, ranges, options)
    report = verify.verify(result.flatbuffer, model, samples, fmt="tflite", progress=False)
    return min(m["sqnr_db"] for m in report.outputs.values()), result


def _candidates(model, ranges, samples, trial, kept: set[str], progress: bool) -> list[frozenset[str]]:
    """Spans of the worst layers not yet kept: each alone, then with the span producing its input."""
    rows = per_layer.rank(model, trial.flatbuffer, trial.tensor_map, samples, progress=progress)
    mapped = set(trial.tensor_map)
    found: list[frozenset[str]] = []
    layers = 0
    for row in rows:
        span = span_nodes(model, row["tensor"], mapped) - kept
        if not span:
            continue
        upstream = set()
        for tensor in _span_inputs(model, span):
            if tensor in mapped:
                upstream |= span_nodes(model, tensor, mapped)
        for candidate in (frozenset(span), frozenset(span | (upstream - kept))):
            if candidate not in found:
                found.append(candidate)
        layers += 1
        if layers == CANDIDATE_LAYERS:
            break
    return found


def _span_inputs(model: onnx.ModelProto, span: set[str]) -> set[str]:
    """Tensors the span's nodes read that no node of the span produces."""
    nodes = [n for n in model.graph.node if n.name in span]
    produced = {o for n in nodes for o in n.output}
    return {i for n in nodes for i in n.input if i and i not in produced}


def span_nodes(model: onnx.ModelProto, tensor: str, mapped: set[str]) -> set[str]:
    """Names of the nodes between ``tensor`` and its nearest mapped (TFLite-visible) ancestors."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found, stack = set(), [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in found:
            continue
        found.add(node.name)
        stack.extend(i for i in node.input if i and i not in mapped)
    return found
