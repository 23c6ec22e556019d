"""The patterns of a ``quantize_dynamic`` model, found before ``frontend.quantized`` reads it (``qdynamic``).

    prepare(reader)     fills reader.run_time (tensors quantized in front of integer ops),
                        reader.rescales (integer op output -> Rescale: the float tensor its rescale
                        writes, the weight scale, a bias), reader.replace (embedding lookups on a
                        float table) and reader.skip (positions of the nodes that only compute
                        run-time scales, requantize biases or rescale: dropped)

An integer op's rescale is recognised by what it computes, not one fixed node list: from the int32
accumulator, an optional Add of a bias quantized at run time, a Cast to float, a Mul by a product
whose leaves are the operands' scales and constants (the weight scale). Every value computed from a
run-time scale is followed (a taint, to a fixed point); one read by anything but these chains is
refused by name, so nothing that depends on a run-time scale survives into the float graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper

from converters.frontend.qoperator import dequantize_const, fresh

STD = ("", "ai.onnx")
# ops that move integers without changing them: a per-tensor dequantization commutes with them
MOVES = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
INTEGER_OPS = ("ConvInteger", "MatMulInteger")
# the run-time bias chain, from the int32 Add back to the float bias: Reshape <- Cast <- Floor <- Div(b, s)
BIAS_CHAIN = ("Reshape", "Cast", "Floor", "Round")


@dataclass(frozen=True)
class RunTime:
    """A tensor quantized in front of integer ops: ``x`` with ``scale`` / ``zero_point`` computed at
    run time, or constant (the 2020 quantizer's ``static=True`` IntegerOps form: the rescale
    multiplies by it all the same; the model is calibrated like a dynamic one)."""
    x: str
    scale: str
    zero_point: str
    computed: bool              # a QuantizeLinear on a computed scale (its cone of nodes is dropped)


@dataclass
class Rescale:
    """What a ConvInteger/MatMulInteger's rescale chain says: the float tensor it writes, the
    constant factor of its scale product (the weight scale) and a bias it adds."""
    out: str
    scale: np.ndarray | None
    bias: np.ndarray | None = None
    chain: set[int] = field(default_factory=set)    # positions of the nodes it is made of (dropped)


# --- before reading: find the patterns ---------------------------------------------------------
def prepare(reader) -> None:
    """Find run-time quantizers, the nodes computing their scales, each integer op's rescale,
    and mark every node that only serves them (``reader.skip``, by position)."""
    nodes = list(reader.model.graph.node)
    producers = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    reader.run_time = _run_time_quantized(reader, nodes)
    reader.rescales = {}
    cone = _scale_cones(reader, nodes, producers)
    barriers = {k for k, n in enumerate(nodes)
                if (n.output and n.output[0] in reader.run_time) or n.op_type == "MatMulIntegerToFloat"}
    for k, node in enumerate(nodes):
        if node.op_type not in INTEGER_OPS or node.domain not in STD:
            continue
        gathered = {i: g for i in node.input[:2] if (g := _gathered(reader, i, nodes, producers)) is not None}
        found = _rescale(reader, node, nodes, producers, gathered)
        if isinstance(found, str):
            reader.problems.append(f"{where(node)}: {found}")
            barriers.add(k)                      # listed once, not again at every reader downstream
            continue
        reader.rescales[node.output[0]] = found
        _dequantize_gathered(reader, node, found, gathered, nodes)
        if found.bias is None and node.input[1] in reader.consts:
            found.chain |= _fold_float_bias(reader, found, _bias_fits(node, reader.consts[node.input[1]]), nodes,
                                            producers)
    sources = {t for r in reader.run_time.values() for t in (r.scale, r.zero_point) if t and t not in reader.consts}
    handled = {k for k, n in enumerate(nodes) if n.op_type in INTEGER_OPS and k not in barriers}
    sources |= {o for k in cone | handled for o in nodes[k].output}     # scales, int32 accumulators
    tainted, tainted_nodes = _taint(nodes, sources, barriers, {r.out for r in reader.rescales.values()})
    chains = {k for r in reader.rescales.values() for k in r.chain}
    reader.skip |= cone | chains
    _check_leaks(reader, nodes, tainted, tainted_nodes - handled - chains - cone)


def _run_time_quantized(reader, nodes) -> dict[str, RunTime]:
    out = {}
    for n in nodes:
        if n.op_type == "DynamicQuantizeLinear" and n.domain in STD:
            out[n.output[0]] = RunTime(n.input[0], n.output[1], n.output[2], computed=False)
        elif n.op_type == "QuantizeLinear" and n.domain in STD and len(n.input) > 1 and n.input[0] not in reader.consts:
            computed = n.input[1] not in reader.consts
            readers = reader.consumers.get(n.output[0], [])
            if computed or (readers and all(u.op_type in INTEGER_OPS for u in readers)):
                zp = n.input[2] if len(n.input) > 2 else ""
                out[n.output[0]] = RunTime(n.input[0], n.input[1], zp, computed=computed)
    return out


def _scale_cones(reader, nodes, producers) -> set[int]:
    """The nodes that compute a run-time scale / zero point from ``x`` (back to ``x`` and constants)."""
    cone: set[int] = set()
    for r in reader.run_time.values():
        if not r.computed:
            continue
        stack = [t for t in (r.scale, r.zero_point) if t and t not in reader.consts]
        while stack:
            k = producers.get(stack.pop())
            if k is None or k in cone:
                continue
            cone.add(k)
            stack += [i for i in nodes[k].input if i and i != r.x and i not in reader.consts]
    return cone


def _taint(nodes, sources: set[str], barriers: set[int], released: set[str]) -> tuple[set[str], set[int]]:
    """Tensors and nodes computed from run-time scales; a barrier (a run-time quantizer, a fused
    op reading scales) and a rescale's float output stop it."""
    tainted, hit = set(sources), set()
    changed = True
    while changed:                      # to a fixed point: a graph's node order need not be sorted
        changed = False
        for k, n in enumerate(nodes):
            if k in hit or k in barriers or not any(i in tainted for i in n.input):
                continue
            hit.add(k)
            tainted.update(o for o in n.output if o and o not in released)
            changed = True
    return tainted, hit


def _check_leaks(reader, nodes, tainted: set[str], leaks: set[int]) -> None:
    """Name each node that reads a run-time scale (or a value made from one) outside the rescale
    chains, and each graph output made from one; a leak's own readers are not listed again."""
    leaked = {o for k in leaks for o in nodes[k].output}
    for k in sorted(leaks):
        first = next((i for i in nodes[k].input if i in tainted and i not in leaked), None)
        if first is not None:
            reader.problems.append(f"{where(nodes[k])}: reads '{first}', a value computed from run-time "
                                   "quantization scales (only a ConvInteger/MatMulInteger rescale may)")
    for o in reader.model.graph.output:
        if o.name in tainted and o.name not in leaked:
            reader.problems.append(f"graph output '{o.name}' is computed from run-time quantization scales")


# --- the rescale chain -------------------------------------------------------------------------
def _single(reader, name: str, op_type: str):
    users = reader.consumers.get(name, [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _rescale(reader, node, nodes, producers, gathered: dict) -> Rescale | str:
    """The Rescale of an integer op, or why its output is not rescaled as quantize_dynamic writes it."""
    for i in node.input[:2]:
        if i not in reader.run_time and i not in reader.consts and i not in gathered:
            return f"input '{i}' is neither quantized at run time nor a constant (nor an embedding lookup)"
    if all(i in reader.consts for i in node.input[:2]):
        return "both inputs are constants"
    y, bias, chain = node.output[0], None, set()
    dynamic = {reader.run_time[i].scale for i in node.input[:2] if i in reader.run_time}
    add = _single(reader, y, "Add")
    if add is not None:
        other = add.input[1] if add.input[0] == y else add.input[0]
        bias = _run_time_bias(reader, other, dynamic, nodes, producers, chain)
        if bias is None:
            return "its int32 output gets an Add of something other than a bias quantized at run time"
        y = add.output[0]
    cast = _single(reader, y, "Cast")
    if cast is None or next((a.i for a in cast.attribute if a.name == "to"), 0) != TensorProto.FLOAT:
        return "its int32 output is not rescaled the way quantize_dynamic writes it (no Cast to float)"
    mul = _single(reader, cast.output[0], "Mul")
    if mul is None:
        return "its float output is not multiplied by input_scale * weight_scale"
    chain |= {producers[t.output[0]] for t in (add, cast, mul) if t is not None}
    scale = _weight_scale(reader, node, mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0],
                          dynamic, nodes, producers, chain, gathered)
    if isinstance(scale, str):
        return scale
    return Rescale(mul.output[0], scale, bias, chain)


def _weight_scale(reader, node, product: str, dynamic: set[str], nodes, producers, chain: set[int], gathered):
    """The constant factor of the rescale ``product`` (x_scale * w_scale), or why there is none."""
    factors = _factors(reader, product, dynamic, nodes, producers, chain)
    if not dynamic <= set(factors):
        return "its rescale does not multiply by the run-time scale of its input"
    consts = [f for f in factors if f not in dynamic]
    if any(f not in reader.consts for f in consts):
        return "its rescale multiplies by a value that is not a constant weight scale"
    scale = None
    for f in consts:
        scale = np.asarray(reader.consts[f], np.float64) * (1.0 if scale is None else scale)
    if scale is None and any(i in reader.consts or i in gathered for i in node.input[:2]):
        return "its rescale has no weight scale"
    if scale is not None and not any(i in reader.consts or i in gathered for i in node.input[:2]):
        return "its rescale multiplies by a constant, but both inputs are quantized at run time"
    if node.op_type == "ConvInteger" and scale is not None and scale.size > 1:
        return "per-channel weight scales on a ConvInteger (quantize_dynamic writes one scale per tensor)"
    return scale


def _factors(reader, name: str, dynamic: set[str], nodes, producers, chain: set[int]) -> list[str]:
    """The leaves of the Mul tree that computes ``name`` (scales and constants); its Muls join ``chain``."""
    k = producers.get(name)
    if name in dynamic or name in reader.consts or k is None or nodes[k].op_type != "Mul":
        return [name]
    chain.add(k)
    return [f for i in nodes[k].input for f in _factors(reader, i, dynamic, nodes, producers, chain)]


def _run_time_bias(reader, name: str, dynamic, nodes, producers, chain: set[int]) -> np.ndarray | None:
    """The float bias ``b`` of ``Reshape(Cast(int32, Floor(Div(b, scale))))``, else None."""
    k, seen = producers.get(name), set()
    while k is not None and nodes[k].op_type in BIAS_CHAIN:
        seen.add(k)
        k = producers.get(nodes[k].input[0])
    if k is None or nodes[k].op_type != "Div" or nodes[k].input[0] not in reader.consts:
        return None
    chain |= seen | {k}
    _factors(reader, nodes[k].input[1], dynamic, nodes, producers, chain)      # its scale product
    return np.asarray(reader.consts[nodes[k].input[0]], np.float32).reshape(-1)


def _gathered(reader, name: str, nodes, producers) -> int | None:
    """The position of ``Gather(constant integer table, ids)`` when ``name`` is its output, moved
    only by Transpose/Reshape/... (quantize_dynamic feeds an embedding lookup to a MatMulInteger
    this way, with the table's constant scale in the rescale product), else None."""
    k = producers.get(name)
    while (k is not None and nodes[k].op_type in MOVES and len(reader.consumers.get(nodes[k].output[0], ())) == 1):
        k = producers.get(nodes[k].input[0])
    if k is None or nodes[k].op_type != "Gather" or nodes[k].input[0] not in reader.consts \
            or reader.consts[nodes[k].input[0]].dtype.kind not in "iu" \
            or len(reader.consumers.get(nodes[k].output[0], ())) != 1 or len(reader.consumers.get(name, ())) != 1:
        return None
    return k


def _dequantize_gathered(reader, node, r: Rescale, gathered: dict, nodes) -> None:
    """The lookup reads a float table, ``(q - zp)`` times the rescale's constant factor when no
    operand is a constant (the weights take it otherwise: the product is the same)."""
    takes_scale = not any(i in reader.consts for i in node.input[:2])
    for name, k in gathered.items():
        operand = list(node.input[:2]).index(name)
        zp = const_input(reader, node, operand + 2)
        table = nodes[k].input[0]
        floats = fresh(reader, f"{table}_dequantized")
        scale = r.scale if takes_scale and r.scale is not None else 1.0
        reader.new_consts[floats] = reader.consts[floats] = dequantize_const(reader.consts[table], scale, zp, None)
        lookup = helper.make_node("Gather", [floats, *nodes[k].input[1:]], list(nodes[k].output), name=nodes[k].name)
        lookup.attribute.extend(nodes[k].attribute)
        reader.replace[k] = lookup
        reader.gathered.add(name)


def _bias_fits(node, w: np.ndarray):
    """Whether a constant added to the op's output is one value per output channel: along axis 1
    of a Conv's output, along the last axis of a MatMul's (a Gemm's bias, which quantize_dynamic
    splits off as an Add)."""
    if node.op_type == "ConvInteger":
        return lambda v: v.ndim <= w.ndim and ((1,) * (w.ndim - v.ndim) + v.shape)[1] == v.size == w.shape[0]
    return lambda v: w.ndim == 2 and v.ndim <= 2 and v.shape[-1] == v.size == w.shape[-1]


def _fold_float_bias(reader, r: Rescale, fits, nodes, producers) -> set[int]:
    """The bias added after the rescale: ``Add(y, Reshape(b, [1, -1, 1, 1]))`` after a Conv (current
    quantize_dynamic), ``Add(y, b)`` after a MatMul (a Gemm it split). It becomes the op's bias
    (one int32 bias rather than an int8 Add); returns the nodes absorbed."""
    add = _single(reader, r.out, "Add")
    if add is None:
        return set()
    other = add.input[1] if add.input[0] == r.out else add.input[0]
    absorbed, k = {producers[add.output[0]]}, producers.get(other)
    if other in reader.consts:
        value = np.asarray(reader.consts[other])
    elif (k is not None and nodes[k].op_type == "Reshape" and all(i in reader.consts for i in nodes[k].input[:2])
          and 0 not in reader.consts[nodes[k].input[1]] and len(reader.consumers.get(other, [])) == 1):
        value = np.reshape(reader.consts[nodes[k].input[0]], reader.consts[nodes[k].input[1]].astype(np.int64))
        absorbed.add(k)
    else:
        return set()
    if value.dtype.kind != "f" or not fits(value):
        return set()                     # not one value per output channel: an ordinary Add
    r.bias, r.out = value.astype(np.float32).reshape(-1), add.output[0]
    return absorbed


def where(node) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"

def const_input(reader, node, index: int):
    """A constant input's value, None when absent or computed (a computed one is not listed here:
    ``_operand`` names the operand it belongs to)."""
    name = node.input[index] if index < len(node.input) else ""
    return reader.consts.get(name) if name else None
