"""The second half of reading a quantized model (``frontend.quantized``): names, parameters, ties.

    1. each value (names linked by Q/DQ) gets one name: a graph output's, a graph input's, or the
       float tensor its producer computes; a value with two graph outputs keeps both (Identity);
    2. its parameters: the model's (scale, zero point), mapped to int8; a value quantized twice
       with different parameters takes their union's, with a note;
    3. the Relu that ONNX Runtime folded into a Q whose zero point is the range floor comes back;
    4. ties: TFLite gives MaxPool/Reshape/Concat/... one set of parameters for inputs and output
       (``tflite/rules.SAME_PARAMS``); an unannotated side takes the other's, and a model whose
       own scales differ there gets a note (they are unified);
    5. which nodes the model runs in int8, which in float, which tensors int8 nodes need but the
       model does not annotate; the weight grids by node (output channels), the bias check;
    6. the float ModelProto (dead constants dropped, graph outputs float, value_info cleared).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.carried import ActParams, Carried, ChannelGrid
# TFLite ties these ops' input and output parameters (tflite/rules.SAME_PARAMS); an
# unannotated side takes the other's range.
SAME_RANGE = frozenset({"MaxPool", "AveragePool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice",
                        "Split", "Pad", "Resize", "Identity", "GlobalMaxPool", "DepthToSpace",
                        "SpaceToDepth", "Gather", "Dropout"})
# TFLite int8 kernels with lookup tables fix their output parameters (tflite/rules.FIXED_OUTPUT)
FIXED_PARAMS = {"Sigmoid": (1 / 256, -128), "Softmax": (1 / 256, -128), "Tanh": (1 / 128, 0),
                "LogSoftmax": (16 / 256, 127)}
FIXED_OUTPUT = frozenset(FIXED_PARAMS)
# producers after which ONNX Runtime folds a Relu/Clip into the Q (and whose output can be negative)
FUSING = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "BatchNormalization"})
FUSED_ACTIVATION = frozenset({"Relu", "Clip"})
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
LIST_AT_MOST = 12


def finish(r) -> tuple[onnx.ModelProto, Carried]:
    g = r.model.graph
    canon, nodes = _canonical(r, g)
    acts = _merge_params(r, canon)
    nodes = _restore_relus(nodes, acts)
    derived = _ties(nodes, acts, r.notes)
    _check_fixed_outputs(nodes, acts, r.notes)
    consts = _constant_values(r.consts, nodes)
    int8 = _int8_nodes(r, nodes, acts)
    static = bool({"qdq", "qoperator"} & r.forms) and bool(acts)
    known = {**acts, **derived}
    if static:
        float_nodes = frozenset(n.name for n in nodes if n.name not in int8 and _reads_activations(n, consts))
        missing = _unannotated(nodes, int8, known, consts, {o.name for o in g.output})
    else:
        float_nodes = frozenset()
        missing = sorted({t for n in nodes for t in _activations(n, consts)} - set(known))
    model = _model(r, g, nodes, set(known))
    carried = Carried(form="+".join(sorted(r.forms)) or "weights", activations=known,
                      weights=dict(r.grids), float_nodes=float_nodes, notes=r.notes,
                      unannotated=tuple(missing), split_gemms=tuple(r.split_gemms))
    carried.node_weights.update(_node_weights(nodes, r.grids, r.notes))
    _check_biases(nodes, r.bias_scales, carried, r.notes)
    return model, carried


# --- 1. names ----------------------------------------------------------------------------------
def _canonical(r, g) -> tuple[dict[str, str], list]:
    outputs, inputs = [o.name for o in g.output], [i.name for i in g.input]
    members: dict[str, list[str]] = {}
    for name in set(r.parent) | set(r.parent.values()) | set(r.decl):
        members.setdefault(r.find(name), []).append(name)
    canon: dict[str, str] = {}
    extra = []
    for root, names in members.items():
        outs = [m for m in outputs if m in names]
        pick = (outs[0] if outs else next((m for m in inputs if m in names), None)
                or next((m for m in sorted(names) if m in r.real), root))
        canon.update({m: pick for m in names})
        extra += [helper.make_node("Identity", [pick], [o], name=f"{o}_identity") for o in outs[1:]]
    nodes = []
    for node in r.nodes + extra:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for field in (copy.input, copy.output):
            renamed = [canon.get(n, n) for n in field]
            del field[:]
            field.extend(renamed)
        nodes.append(copy)
    # Identity outputs keep their own name
    for node, o in zip(nodes[len(r.nodes):], [n.output[0] for n in extra]):
        node.output[0] = o
    return canon, nodes


# --- 2. parameters -----------------------------------------------------------------------------
def _merge_params(r, canon) -> dict[str, ActParams]:
    by_value: dict[str, list[ActParams]] = {}
    for name, params in r.decl.items():
        by_value.setdefault(canon.get(name, name), []).extend(params)
    out = {}
    for name, params in by_value.items():
        distinct = {(p.scale, p.zero_point) for p in params}
        if len(distinct) == 1:
            out[name] = params[0]
            continue
        lo = min(p.range()[0] for p in params)
        hi = max(p.range()[1] for p in params)
        out[name] = _from_range(lo, hi, params[0].dtype)
        r.notes.append(f"tensor '{name}' is quantized with {len(distinct)} different scales in the model; "
                       f"one int8 tensor holds their union (scale {out[name].scale:.6g})")
    for p in {p.dtype for ps in by_value.values() for p in ps} - {"uint8", "int8"}:
        r.notes.append(f"{p} activations are requantized to int8 (TFLite int8 holds 256 levels)")
    return out


def _from_range(lo: float, hi: float, dtype: str) -> ActParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    return ActParams(scale, int(np.clip(np.round(-128 - lo / scale), -128, 127)), dtype)


# --- 3. folded Relus ---------------------------------------------------------------------------
def _restore_relus(nodes: list, acts: dict) -> list:
    """Conv -> Q(zero point at the floor) computes max(conv, 0): make the float graph say so."""
    taken = {n.name for n in nodes}
    out = []
    for node in nodes:
        out.append(node)
        y = node.output[0] if node.output else ""
        if node.op_type not in FUSING or y not in acts or acts[y].zero_point != -128:
            continue
        pre = f"{y}_before_relu"
        node.output[0] = pre
        name, k = f"{node.name}_relu", 1
        while name in taken:
            name, k = f"{node.name}_relu_{k}", k + 1
        taken.add(name)
        out.append(helper.make_node("Relu", [pre], [y], name=name))
    return out


# --- 4. ties -----------------------------------------------------------------------------------
def _tied(node) -> tuple[list[str], list[str]]:
    """(data inputs, outputs) that TFLite gives one set of parameters."""
    if node.op_type == "Concat":
        return [i for i in node.input if i], list(node.output)
    if node.op_type in SAME_RANGE and node.input and node.output:
        return [node.input[0]], [node.output[0]]
    return [], []


def _ties(nodes: list, acts: dict, notes: list) -> dict[str, ActParams]:
    derived: dict[str, ActParams] = {}
    for _ in range(len(nodes) + 1):                   # to a fixed point (chains of ties)
        changed = False
        for node in nodes:
            ins, outs = _tied(node)
            members = ins + outs
            known = [m for m in members if m in acts or m in derived]
            if not known or len(known) == len(members):
                continue
            source = (acts.get(known[0]) or derived[known[0]])
            for m in members:
                if m not in acts and m not in derived:
                    derived[m] = source
                    changed = True
        if not changed:
            break
    clashes = [f"'{n.name}' ({n.op_type})" for n in nodes
               if len({(acts[m].scale, acts[m].zero_point) for m in sum(_tied(n), []) if m in acts}) > 1]
    if clashes:        # one note for all of them: a DenseNet has dozens
        notes.append(f"{_listed(clashes)}: TFLite int8 needs one scale for the inputs and the output of "
                     f"{'this node' if len(clashes) == 1 else 'these nodes'}, the model has several; they are "
                     "unified (the union of their ranges), so these tensors are requantized")
    return derived


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - LIST_AT_MOST} more" if len(items) > LIST_AT_MOST else ""
    return f"node{'s' if len(items) > 1 else ''} " + ", ".join(items[:LIST_AT_MOST]) + more


def _check_fixed_outputs(nodes: list, acts: dict, notes: list) -> None:
    replaced = []
    for node in nodes:
        p = acts.get(node.output[0]) if node.op_type in FIXED_PARAMS and node.output else None
        scale, zp = FIXED_PARAMS.get(node.op_type, (0, 0))
        if p is not None and (np.float32(p.scale), p.zero_point) != (np.float32(scale), zp):
            replaced.append(f"'{node.name}' ({node.op_type}: {p.scale:.6g}, {p.zero_point} -> {scale:.6g}, {zp})")
    if replaced:
        notes.append(f"{_listed(replaced)}: the TFLite int8 kernel fixes the output scale and zero point; the "
                     "model's are replaced")


# --- 5. classification -------------------------------------------------------------------------
def _constant_values(consts: dict, nodes: list) -> set[str]:
    """Names of constants and of what nodes compute from constants only (folded later)."""
    out = set(consts)
    for n in nodes:
        if all(not i or i in out for i in n.input):
            out.update(o for o in n.output if o)
    return out


def _activations(node, consts) -> list[str]:
    return [t for t in list(node.input) + list(node.output) if t and t not in consts]


def _reads_activations(node, consts) -> bool:
    return node.op_type != "Constant" and any(i and i not in consts for i in node.input)


def _fused_away(name: str, users: dict, acts: dict) -> bool:
    readers = users.get(name, [])
    return bool(readers) and all(u.op_type in FUSED_ACTIVATION and u.output[0] in acts for u in readers)


def _int8_nodes(r, nodes: list, acts: dict) -> set[str]:
    users: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    int8 = set(r.int8_nodes)
    for n in nodes:
        if any(o in acts for o in n.output):
            int8.add(n.name)
        elif n.op_type in FUSING and n.output and _fused_away(n.output[0], users, acts):
            int8.add(n.name)
        elif (n.op_type in SAME_RANGE or n.op_type == "Concat") and n.input and n.input[0] in acts:
            int8.add(n.name)        # moves int8 values as they are: exact either way
    return int8


def _unannotated(nodes: list, int8: set, known: dict, consts: dict, outputs: set) -> list[str]:
    users: dict[str, list] = {name: [] for name in outputs}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    missing = set()
    for n in nodes:
        if n.name not in int8:
            continue
        for i in n.input:
            if i and i not in consts and i not in known and not _fused_away(i, users, known):
                missing.add(i)
        for o in n.output:                   # a Dropout's unread mask needs no range
            if o and o in users and o not in known and n.op_type not in FIXED_OUTPUT \
                    and not _fused_away(o, users, known):
                missing.add(o)
    return sorted(missing)


def _node_weights(nodes: list, grids: dict, notes: list) -> dict[str, ChannelGrid]:
    out = {}
    for node in nodes:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in grids:
            continue
        grid = grids[node.input[1]]
        if node.op_type == "MatMul" and grid.q.ndim != 2:
            continue
        axis = _output_axis(node) % grid.q.ndim
        channels = grid.channels(axis)
        if channels is None:
            notes.append(f"weights of '{node.name}' are per-channel along axis {grid.axis}, not along the output "
                         f"channels (axis {axis}): requantized per output channel")
            continue
        out[node.name] = channels
    return out


def _output_axis(node) -> int:
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    return -1 if node.op_type == "MatMul" else 0


def _check_biases(nodes: list, bias_scales: dict, carried: Carried, notes: list) -> None:
    """int32 biases survive exactly when their scale is input_scale * weight_scale (TFLite's rule)."""
    for node in nodes:
        if node.op_type not in ("Conv", "Gemm", "ConvTranspose") or len(node.input) < 3:
            continue
        b, x = node.input[2], node.input[0]
        if b not in bias_scales or node.name not in carried.node_weights or x not in carried.activations:
            continue
        expected = np.float64(carried.activations[x].scale) * carried.node_weights[node.name].scales.astype(np.float64)
        got = np.broadcast_to(bias_scales[b].astype(np.float64), expected.shape)
        if not np.allclose(got, expected, rtol=1e-5, atol=0):
            notes.append(f"bias of '{node.name}': its scale is not input_scale * weight_scale (the TFLite int8 "
                         "spec's), so its int32 values are requantized")


# --- 6. the float model ------------------------------------------------------------------------
def _model(r, g, nodes: list, quantized: set) -> onnx.ModelProto:
    nodes = _drop_dead_constants(nodes, {i.name for i in g.initializer} | set(r.new_consts),
                                 {o.name for o in g.output})
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    inits = [i for i in g.initializer if i.name in used and i.name not in r.new_consts]
    inits += [numpy_helper.from_array(v, k) for k, v in r.new_consts.items() if k in used]
    init_names = {i.name for i in g.initializer}
    inputs = [_as_float(vi, "input", quantized, r.notes) for vi in g.input
              if vi.name not in init_names or vi.name in used]
    outputs = [_as_float(vi, "output", quantized, r.notes) for vi in g.output]
    graph = helper.make_graph(nodes, g.name, inputs, outputs, inits)
    model = onnx.ModelProto()
    model.CopyFrom(r.model)
    model.graph.CopyFrom(graph)
    domains = {n.domain for n in nodes}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in domains]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model


def _as_float(vi, role: str, quantized: set, notes: list) -> onnx.ValueInfoProto:
    """A graph input/output the model keeps quantized (uint8/int8) is float32 in the float graph."""
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(vi)
    kind = copy.type.tensor_type.elem_type
    if vi.name in quantized and kind in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
        notes.append(f"graph {role} '{vi.name}' is {onnx.TensorProto.DataType.Name(kind)} in the model; the converted "
                     f"model's is float32 (--io {onnx.TensorProto.DataType.Name(kind).lower()} gives raw integers)")
        copy.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return copy


def _drop_dead_constants(nodes: list, consts: set, outputs: set) -> list:
    """Constant nodes, and nodes of constants only (torch.onnx's Identity of a zero point), that
    only the removed Q/DQ nodes read."""
    made = set(consts)
    for n in nodes:
        if n.op_type == "Constant" or (n.input and all(not i or i in made for i in n.input)):
            made.update(n.output)
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if not set(n.output) <= made or any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept
