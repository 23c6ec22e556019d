"""Per-layer error: which layer of a quantized model broke the result.

TFLite candidates are compared through their tensor map (below); QDQ ONNX candidates by tensor
name (``compare_layers_qdq``), since the QDQ writer keeps the float graph's names.

Inputs: the float ONNX model, the TFLite flatbuffer and its ``tensor_map``
``{onnx_name: {"index": tflite_tensor_index, "perm": [...] | None}}`` (written by
converters.tflite.build and stored in the artifact manifest; ``tflite = onnx.transpose(perm)``).
Every mapped tensor is read from LiteRT (preserve_all_tensors), dequantized, compared with the
same tensor in onnxruntime, and accumulated over the samples.

A layer is the span from a mapped tensor back to its nearest mapped ancestors (so Conv+Relu
fused into one TFLite op is one layer). Layers are ranked by the noise they ADD:

    nsr          noise-to-signal power ratio at the layer's output (10^(-SQNR/10))
    added_nsr    nsr(output) - max nsr(inputs): independent noise powers add, so this is the
                 share of the error this layer introduced itself
    own_sqnr_db  -10 log10(added_nsr): the SQNR the layer would have with exact inputs

The plain SQNR drop in dB (input SQNR - output SQNR) is reported too, but not used to rank: it
is huge for the first layer (its input is exact: 200 dB) however well that layer does.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import onnx

from converters.calibrate.runner import float_tensor_names
from converters.frontend.names import node_names
from converters.progress import bar
from converters.verify.metrics import SQNR_CAP, Accumulator
from converters.verify.runners import OnnxRunner, TFLiteRunner, VerifyInputError


@dataclass
class LayerError:
    tensor: str            # ONNX tensor name at the layer's output
    node: str              # the ONNX node that produces it
    op: str                # op types of the span, e.g. "Conv+Clip"
    sqnr_db: float
    input_sqnr_db: float
    drop_db: float
    own_sqnr_db: float
    added_nsr: float
    cosine: float
    max_abs: float

    def to_dict(self) -> dict:
        return asdict(self)


def _own_sqnr(added: float) -> float:
    return SQNR_CAP if added <= 0 else float(min(SQNR_CAP, -10.0 * math.log10(added)))


def check_tensor_map(tensor_map: dict, model: onnx.ModelProto) -> dict[str, dict]:
    """Entries naming a float graph input or node output of ``model`` (others are ignored)."""
    inputs, produced = float_tensor_names(model)     # float tensors with a known type only
    known = set(inputs) | set(produced)
    clean = {}
    for name, entry in (tensor_map or {}).items():
        if name not in known:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            raise VerifyInputError(f"tensor_map entry for {name!r} is malformed: {entry!r}",
                                   hint='expected {"index": int, "perm": [int, ...] | null}')
        clean[name] = entry
    if not clean:
        raise VerifyInputError("the tensor_map names no tensor of the reference model",
                               hint="per-layer needs the manifest written when this model was converted")
    return clean


def compare_layers(model: onnx.ModelProto, tflite: bytes, tensor_map: dict, samples: list[dict],
                   *, progress: bool = False) -> list[LayerError]:
    """Per-layer errors, worst (largest added noise) first."""
    mapping = check_tensor_map(tensor_map, model)
    graph_inputs = {vi.name for vi in model.graph.input}
    reference = OnnxRunner(model, expose=[n for n in mapping if n not in graph_inputs])
    candidate = TFLiteRunner(tflite, reference.input_names, reference.output_names,
                             preserve_all_tensors=True)
    acc = {name: Accumulator() for name in mapping}
    with bar(samples, progress, "per-layer") as items:
        for sample in items:
            ref = reference.run(sample)
            candidate.run(sample)
            for name, entry in mapping.items():
                value = sample[name] if name in graph_inputs else ref[name]
                if entry.get("perm"):
                    value = value.transpose(entry["perm"])
                acc[name].add(value, candidate.tensor(entry["index"]))
    return rank_layers(model, acc)


def compare_layers_qdq(model: onnx.ModelProto, candidate: bytes, samples: list[dict],
                       *, progress: bool = False) -> list[LayerError]:
    """Per-layer errors of a QDQ ONNX candidate (onnxruntime on both sides), worst first.

    The QDQ writer keeps tensor names, so no map is needed: a tensor with a Q/DQ pair is read
    after its DequantizeLinear (its value as the next layers see it, own quantization included,
    like a TFLite int8 tensor); a tensor without one (fused into a Relu, or a graph output) as is.
    """
    # The reference comes typed from the frontend; the candidate's Q/DQ outputs have no types
    # yet: infer them once here, so the name lookup and the runner below both reuse them.
    cand_model = onnx.shape_inference.infer_shapes(onnx.load_from_string(candidate))
    seen_as = _dequantized_names(cand_model)
    _, produced = float_tensor_names(model)
    _, cand_produced = float_tensor_names(cand_model)
    available = set(cand_produced)
    names = [n for n in produced if seen_as.get(n, n) in available]
    if not names:
        raise VerifyInputError("the QDQ model shares no tensor names with the reference",
                               hint="was it converted from this reference model?")
    reference = OnnxRunner(model, expose=names)
    cand_run = OnnxRunner(cand_model, expose=[seen_as.get(n, n) for n in names])
    acc = {name: Accumulator() for name in names}
    with bar(samples, progress, "per-layer") as items:
        for sample in items:
            ref, got = reference.run(sample), cand_run.run(sample)
            for name in names:
                acc[name].add(ref[name], got[seen_as.get(name, name)])
    return rank_layers(model, acc)


def _dequantized_names(model: onnx.ModelProto) -> dict[str, str]:
    """tensor -> output of a DequantizeLinear(QuantizeLinear(tensor)) in a QDQ model."""
    quantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    found = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in quantized:
            found.setdefault(quantized[node.input[0]], node.output[0])
    return found


def rank(model: onnx.ModelProto, tflite: bytes, tensor_map: dict, samples: list[dict],
         *, progress: bool = False) -> list[dict]:
    """compare_layers as plain dict rows (worst first), for callers that store or filter them."""
    return [row.to_dict() for row in compare_layers(model, tflite, tensor_map, samples, progress=progress)]


def rank_layers(model: onnx.ModelProto, acc: dict[str, Accumulator]) -> list[LayerError]:
    """Build the layer rows from per-tensor accumulators and sort by added noise."""
    producer = {o: n for n in model.graph.node for o in n.output}
    # rows name nodes as --keep-float takes them (frontend/names.py), unnamed ones included
    name_of = {id(n): name for n, name in zip(model.graph.node, node_names(model))}
    initializers = {i.name for i in model.graph.initializer}
    rows = []
    for name, a in acc.items():
        node = producer.get(name)
        if node is None:
            continue                      # a graph input: no layer produced it
        ancestors, ops = _span(name, producer, acc, initializers)
        in_nsr = max((acc[x].nsr for x in ancestors), default=0.0)
        in_sqnr = min((acc[x].sqnr_db for x in ancestors), default=SQNR_CAP)
        added = max(a.nsr - in_nsr, 0.0)
        result = a.result()
        rows.append(LayerError(
            tensor=name, node=name_of[id(node)], op="+".join(ops),
            sqnr_db=result["sqnr_db"], input_sqnr_db=round(in_sqnr, 3),
            drop_db=round(in_sqnr - result["sqnr_db"], 3), own_sqnr_db=round(_own_sqnr(added), 3),
            added_nsr=float(added), cosine=result["cosine"], max_abs=result["max_abs"]))
    rows.sort(key=lambda r: r.added_nsr, reverse=True)
    return rows


def _span(name: str, producer: dict, mapped: dict, initializers: set) -> tuple[list[str], list[str]]:
    """(mapped ancestors, op types from them to ``name``) walking back through unmapped tensors."""
    ancestors, ops, stack, seen = [], [], [name], set()
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or tensor in seen or node.op_type == "Constant":
            continue
        seen.add(tensor)
        ops.append(node.op_type)
        for inp in node.input:
            if not inp or inp in initializers:
                continue
            if inp in mapped:
                ancestors.append(inp)
            else:
                stack.append(inp)
    return sorted(set(ancestors)), ops[::-1]
