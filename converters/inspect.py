"""Inspect a model file: ops, tensors, quantization parameters and sizes of .tflite/.onnx/.gpk.

``inspect(path) -> dict`` (plain JSON) and ``render(info, limit=SECTION_LINES) -> str`` (the
terminal view). The view shows at most ``limit`` lines per section (tensors, nodes, metadata,
quantized activations) and the first line of a long metadata value, each cut ending in "... N more
(use --all)"; ``limit=None`` (``ganglion inspect --all``) shows everything. ``--json`` is whole.

    .tflite  parsed with ai_edge_litert.schema_py_generated (no interpreter is built, so a model
             the runtime rejects can still be inspected): op counts, every tensor with dtype,
             shape, quantization (per-tensor scale/zero point, or per-channel count and range)
             and its constant-data size
    .onnx    opset, op counts, node names (what --keep-float takes), inputs/outputs, initializer
             sizes by dtype, and the QDQ view:
             quantized activations (QuantizeLinear scale/zero point) and weights dequantized
             from int8 initializers (per-channel or per-tensor); external data is never read
    .gpk     verified with core.artifact.read (hashes; the signature is reported, not checked
             without keys), then the manifest summary and each model inside
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from converters.frontend.names import node_names
from core import artifact
from core.errors import InputError

SECTION_LINES = 40         # per section of the terminal view; a real OCR model's metadata had 6,832 lines
VALUE_CHARS = 300          # a metadata value longer than this (or multi-line) shows its start only


class InspectError(InputError):
    code = "inspect.unreadable"


def inspect(path) -> dict:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InspectError(f"cannot read {path}: {exc}", where=str(path)) from None
    info = inspect_bytes(data, where=str(path), suffix=path.suffix.lower())
    info["path"] = str(path)
    return info


def inspect_bytes(data: bytes, *, where: str = "<bytes>", suffix: str = "") -> dict:
    if data[4:8] == b"TFL3" or suffix == ".tflite":
        return _tflite(data, where)
    if data[:2] == b"PK" or suffix == ".gpk":
        return _gpk(data, where)
    return _onnx(data, where)


# --- TFLite -------------------------------------------------------------------------------------
def _tflite(data: bytes, where: str) -> dict:
    from ai_edge_litert import schema_py_generated as schema   # optional: not needed to inspect .onnx
    if data[4:8] != b"TFL3":
        raise InspectError("not a TFLite flatbuffer (no TFL3 identifier)", where=where,
                           hint="the file is truncated or not a .tflite model")
    try:
        model = schema.Model.GetRootAs(data, 0)
        return _tflite_info(model, schema, len(data))
    except Exception as exc:  # flatbuffers raises assorted IndexError/struct.error on bad data
        raise InspectError(f"corrupt TFLite flatbuffer: {exc!r}", where=where,
                           hint="re-convert the model; the file does not parse") from None


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tflite_info(model, schema, size: int) -> dict:
    ops_by_code = _names(schema.BuiltinOperator)
    types = _names(schema.TensorType)
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        opcodes.append(custom.decode() if custom else ops_by_code.get(builtin, f"BUILTIN_{builtin}"))
    buffers = [model.Buffers(i) for i in range(model.BuffersLength())]
    subgraphs = []
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        ops = [opcodes[sg.Operators(k).OpcodeIndex()] for k in range(sg.OperatorsLength())]
        tensors = [_tflite_tensor(sg.Tensors(j), j, types, buffers) for j in range(sg.TensorsLength())]
        subgraphs.append({
            "name": (sg.Name() or b"").decode(), "op_counts": dict(Counter(ops).most_common()), "ops": ops,
            "inputs": [int(i) for i in sg.InputsAsNumpy()] if sg.InputsLength() else [],
            "outputs": [int(i) for i in sg.OutputsAsNumpy()] if sg.OutputsLength() else [],
            "tensors": tensors,
        })
    const_bytes = Counter()
    for t in (t for sg in subgraphs for t in sg["tensors"]):
        const_bytes[t["dtype"]] += t["data_bytes"]
    return {"format": "tflite", "size_bytes": size, "version": model.Version(),
            "description": (model.Description() or b"").decode(errors="replace"),
            "constant_bytes_by_dtype": dict(const_bytes), "subgraphs": subgraphs}


def _tflite_tensor(t, index: int, types: dict, buffers: list) -> dict:
    shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
    buf = buffers[t.Buffer()] if 0 < t.Buffer() < len(buffers) else None
    data_bytes = 0
    if buf is not None:
        data_bytes = int(buf.DataLength()) or int(buf.Size())
    return {"index": index, "name": (t.Name() or b"").decode(errors="replace"),
            "dtype": types.get(t.Type(), str(t.Type())).lower(), "shape": shape,
            "data_bytes": data_bytes, "quant": _tflite_quant(t.Quantization())}


def _tflite_quant(q) -> dict | None:
    if q is None or q.ScaleLength() == 0:
        return None
    scales = q.ScaleAsNumpy().astype(float)
    zps = q.ZeroPointAsNumpy().astype(int) if q.ZeroPointLength() else np.zeros(len(scales), int)
    if len(scales) == 1:
        return {"scale": float(scales[0]), "zero_point": int(zps[0])}
    return {"channels": int(len(scales)), "axis": int(q.QuantizedDimension()),
            "scale_min": float(scales.min()), "scale_max": float(scales.max()),
            "zero_points": sorted({int(z) for z in zps})}


# --- ONNX ---------------------------------------------------------------------------------------
def _onnx(data: bytes, where: str) -> dict:
    try:
        model = onnx.load_from_string(data)    # external data is referenced, never opened
    except Exception as exc:  # protobuf DecodeError and friends
        raise InspectError(f"not a readable .tflite, .onnx or .gpk file: {exc}", where=where,
                           hint="the file is truncated or of another kind") from None
    if not model.graph.node and not model.graph.input:
        raise InspectError("not a readable .tflite, .onnx or .gpk file (empty ONNX graph)", where=where)
    return _onnx_info(model, len(data))


def _onnx_info(model, size: int) -> dict:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    init_bytes, external = Counter(), 0
    for t in g.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        init_bytes[str(dtype)] += int(np.prod(t.dims, dtype=np.int64)) * dtype.itemsize
        external += t.data_location == onnx.TensorProto.EXTERNAL

    def scalar(name):
        if name in inits and inits[name].data_location != onnx.TensorProto.EXTERNAL:
            value = numpy_helper.to_array(inits[name])
            return value.item() if value.size == 1 else value
        return None

    activations, weights = [], []
    for node in g.node:
        if node.op_type == "QuantizeLinear":
            zp = scalar(node.input[2]) if len(node.input) > 2 else 0
            zp_dtype = str(onnx.helper.tensor_dtype_to_np_dtype(inits[node.input[2]].data_type)) \
                if len(node.input) > 2 and node.input[2] in inits else "uint8"
            activations.append({"tensor": node.input[0], "scale": _num(scalar(node.input[1])),
                                "zero_point": _num(zp), "dtype": zp_dtype})
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            t = inits[node.input[0]]
            scale = scalar(node.input[1])
            per_channel = isinstance(scale, np.ndarray) and scale.size > 1
            weights.append({"tensor": node.input[0], "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)),
                            "shape": list(t.dims), "per_channel": bool(per_channel),
                            "channels": int(scale.size) if per_channel else 1})
    ops = [n.op_type for n in g.node]
    return {"format": "onnx", "size_bytes": size, "ir_version": model.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "metadata": {p.key: p.value for p in model.metadata_props},
            "op_counts": dict(Counter(ops).most_common()), "nodes": len(ops),
            # the names --keep-float takes (an unnamed node is <OpType>_<index>: frontend/names.py)
            "node_list": [{"name": name, "op": n.op_type, "outputs": list(n.output)}
                          for name, n in zip(node_names(g), g.node)],
            "inputs": [_value_info(v) for v in g.input if v.name not in inits],
            "outputs": [_value_info(v) for v in g.output],
            "initializers": len(inits), "initializer_bytes_by_dtype": dict(init_bytes),
            "external_initializers": int(external),
            "qdq": {"quantized_activations": activations, "quantized_weights": weights}}


def _num(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _value_info(v) -> dict:
    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else "?"
    return {"name": v.name, "dtype": dtype, "shape": dims}


# --- .gpk ---------------------------------------------------------------------------------------
def _gpk(data: bytes, where: str) -> dict:
    art = artifact.read(data, where=where)
    art_where = where
    models = {}
    for entry in art.manifest.get("models", []):
        name = entry.get("file")
        if name in art.files:
            models[name] = inspect_bytes(art.files[name], where=f"{art_where}:{name}",
                                         suffix=Path(name).suffix.lower())
    m = art.manifest
    summary = {k: m.get(k) for k in ("name", "version", "converter", "source_model", "quantization",
                                      "calibration", "preprocessing", "inputs", "outputs", "frozen_inputs",
                                      "input_shapes_from_data")
               if m.get(k) is not None}
    if m.get("state"):
        summary["state"] = ", ".join(f"{p.get('output')} -> {p.get('input')}" for p in m["state"]) + " (fed back per call)"
    if m.get("tensor_map"):
        summary["tensor_map"] = f"{len(m['tensor_map'])} ONNX tensors mapped to TFLite (for verify --per-layer)"
    labels = m.get("labels")
    if labels:
        summary["labels"] = f"{len(labels)} labels" if isinstance(labels, list) else labels
    return {"format": "gpk", "size_bytes": len(data), "signed": art.signed,
            "manifest": summary, "fidelity": m.get("fidelity"),
            "files": {name: len(blob) for name, blob in art.files.items()}, "models": models}


# --- rendering ----------------------------------------------------------------------------------
def render(info: dict, limit: int | None = SECTION_LINES) -> str:
    """The terminal view; at most ``limit`` lines per section (None: all, see the module doc)."""
    kind = info.get("format")
    head = [f"{info.get('path', '')}  ({kind}, {_size(info['size_bytes'])})".strip()]
    body = {"tflite": _render_tflite, "onnx": _render_onnx, "gpk": _render_gpk}[kind](info, limit)
    return "\n".join(head + body)


def _cut(lines: list[str], limit: int | None, what: str, indent: str = "  ") -> list[str]:
    """``lines`` up to ``limit``, then one line saying how many more ``what`` there are."""
    if limit is None or len(lines) <= limit:
        return lines
    return lines[:limit] + [f"{indent}... {len(lines) - limit} more {what} (use --all)"]


def _value(text, limit: int | None) -> str:
    """A metadata value on one line: its start only when long or multi-line (unless --all)."""
    text = str(text)
    if limit is None:
        return text
    lines = text.splitlines() or [""]
    if len(lines) == 1 and len(text) <= VALUE_CHARS:
        return text
    size = f"{len(lines):,} lines, {len(text):,} chars" if len(lines) > 1 else f"{len(text):,} chars"
    return f"{lines[0][:VALUE_CHARS]}... ({size}; use --all)"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _counts(counts: dict) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


def _render_tflite(info: dict, limit: int | None) -> list[str]:
    lines = [f"description: {info['description']}"] if info["description"] else []
    lines += ["constant data: " + ", ".join(f"{k} {_size(v)}" for k, v in info["constant_bytes_by_dtype"].items() if v)]
    for sg in info["subgraphs"]:
        lines += [f"subgraph {sg['name'] or 0}: {len(sg['ops'])} ops: {_counts(sg['op_counts'])}",
                  f"  inputs {sg['inputs']}  outputs {sg['outputs']}", "",
                  f"  {'#':>4}  {'dtype':<8} {'shape':<18} {'quantization':<50} {'data':>9}  name"]
        lines += _cut([f"  {t['index']:>4}  {t['dtype']:<8} {str(t['shape']):<18} {_quant(t['quant']):<50} "
                       f"{_size(t['data_bytes']) if t['data_bytes'] else '':>9}  {t['name']}"
                       for t in sg["tensors"]], limit, "tensors")
    return lines


def _quant(q: dict | None) -> str:
    if not q:
        return "-"
    if "channels" in q:
        return f"per-channel x{q['channels']} axis {q['axis']} scale {q['scale_min']:.3g}..{q['scale_max']:.3g}"
    return f"scale {q['scale']:.6g} zp {q['zero_point']}"


def _render_onnx(info: dict, limit: int | None) -> list[str]:
    lines = [f"ir {info['ir_version']}, opsets {info['opsets']}, producer {info['producer'] or '-'}",
             f"{info['nodes']} nodes: {_counts(info['op_counts'])}"]
    for kind in ("inputs", "outputs"):
        lines += _cut([f"{kind[:-1]}: {v['name']} {v['dtype']} {v['shape']}" for v in info[kind]], limit, kind, "")
    lines.append(f"initializers: {info['initializers']} (" + ", ".join(
        f"{k} {_size(v)}" for k, v in info["initializer_bytes_by_dtype"].items()) + ")"
        + (f", {info['external_initializers']} external" if info["external_initializers"] else ""))
    if info["metadata"]:
        lines.append("metadata:")
        lines += _cut([f"  {k} = {_value(v, limit)}" for k, v in info["metadata"].items()], limit, "entries")
    acts, weights = info["qdq"]["quantized_activations"], info["qdq"]["quantized_weights"]
    if not acts and not weights:       # a float model: list the nodes (names for --keep-float)
        lines += ["", f"  {'node':<32} {'op':<20} outputs"]
        lines += _cut([f"  {n['name']:<32} {n['op']:<20} {', '.join(n['outputs'])}" for n in info["node_list"]],
                      limit, "nodes")
    if acts or weights:
        per_channel = sum(w["per_channel"] for w in weights)
        lines += ["", f"QDQ: {len(acts)} quantized activations, {len(weights)} quantized weights "
                      f"({per_channel} per-channel)"]
        lines += _cut([f"  {a['tensor']:<40} {a['dtype']:<6} scale {_fmt(a['scale'])} zp {a['zero_point']}"
                       for a in acts], limit, "activations")
    return lines


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _short(value) -> str:
    text = str(value)
    if isinstance(value, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:12] + "..."           # a sha256: enough to recognise it
    return text


def _io_entry(v: dict) -> str:
    if not isinstance(v, dict):
        return str(v)
    quant = v.get("quant") or ({"scale": v["scale"], "zero_point": v.get("zero_point")} if v.get("scale") else None)
    text = f"{v.get('name')} {v.get('dtype')} {v.get('shape')} {v.get('layout', '')}".rstrip()
    return text + (f" (scale {quant['scale']:.6g}, zp {quant['zero_point']})" if quant else "")


def _render_gpk(info: dict, limit: int | None) -> list[str]:
    m = info["manifest"]
    lines = [f"artifact {m.get('name', '?')} {m.get('version', '')}  signed: "
             f"{'yes (not checked: pass trusted keys to verify)' if info['signed'] else 'no'}"]
    for key, value in m.items():
        if key in ("name", "version"):
            continue
        if key in ("inputs", "outputs") and isinstance(value, list):
            lines += _cut([f"  {key[:-1]}: {_io_entry(v)}" for v in value], limit, key)
        elif isinstance(value, dict):
            lines.append(f"  {key}: " + _value(", ".join(f"{k}={_short(v)}" for k, v in value.items()
                                                         if v not in (None, [], "")), limit))
        else:
            lines.append(f"  {key}: {_value(value, limit)}")
    lines.append("  files: " + ", ".join(f"{n} {_size(s)}" for n, s in info["files"].items()))
    for fmt, report in (info.get("fidelity") or {}).items():
        if isinstance(report, dict) and "outputs" in report:
            lines += [f"  fidelity[{fmt}] {name}: SQNR {m.get('sqnr_db')} dB, top-1 agreement "
                      f"{_agreement(m)} on {report.get('samples')} samples"
                      for name, m in report["outputs"].items()][:limit]
    for name, model in info["models"].items():
        lines += ["", f"== {name} =="] + render(model, limit).splitlines()
    return lines


def _agreement(metrics: dict) -> str:
    value = metrics.get("top1_agreement")
    return "n/a" if value is None and "class_axis" in metrics else str(value)
