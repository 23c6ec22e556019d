"""Dynamically quantized ONNX (ONNX Runtime's ``quantize_dynamic``, every form it has written) -> float ops.

``quantize_dynamic`` stores weights as integers with constant scales and quantizes activations
at run time, in front of each integer op. The forms found in its sources across versions
(onnxruntime/python/tools/quantization: onnx_quantizer.py, operators/conv.py, matmul.py, lstm.py)
and in shipped models:

* activations: ``DynamicQuantizeLinear(x)`` (uint8), or ``QuantizeLinear(x, scale, zp)`` whose
  scale (and uint8 zero point) a chain computes from ``x`` at run time: ReduceMin/ReduceMax ->
  Sub -> Div (uint8; zero point Sub -> Div -> Floor -> Cast) or ReduceMin/ReduceMax -> Abs -> Max
  -> Div (int8, zero point 0); or with constant parameters (``quantize(static=True)`` of 2020);
* ``ConvInteger`` / ``MatMulInteger`` on them, rescaled ``Cast(float) -> Mul(x_scale * w_scale)``.
  A Conv bias is added after the rescale in float (``Add(Reshape(b, [1, -1, 1, 1]))``, current
  versions; folded into the Conv here) or, in the 2020 quantizer (producer ``onnx.quantize``
  0.1.0, e.g. ddddocr's common_old.onnx), quantized at run time and added to the int32
  accumulator: ``Cast(int32, Floor(b / (x_scale * w_scale))) -> Reshape -> Add`` before the Cast;
* ``com.microsoft.DynamicQuantizeLSTM``: an LSTM whose W/R are integers stored transposed,
  [directions, input or hidden, 4 * hidden], with scales per direction or per direction and gate row
  (https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md);
* ``com.microsoft.DynamicQuantizeMatMul`` and ``MatMulIntegerToFloat``: ONNX Runtime's graph
  optimizer fuses the MatMul chains into these (models saved after optimization carry them).

Each becomes the float op it computes on ``x``, with weights ``(q - zp) * scale``: these are the
model's float weights, and the whole model is then calibrated and quantized by the normal int8
path. The nodes that compute run-time scales, requantize biases or rescale are dropped; a node
that reads a run-time scale for anything else is refused, by name. QAttention and
QEmbedLayerNormalization (``quantize_dynamic`` of the fused transformer ops of
``onnxruntime.transformers``) are refused with the reason (``REFUSED``); ONNX Runtime quantizes
no GRU or RNN (they stay float and convert as such).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper

from converters.frontend.qoperator import dequantize_const, fresh

MS = "com.microsoft"
STD = ("", "ai.onnx")
# ops that move integers without changing them: a per-tensor dequantization commutes with them
MOVES = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
INTEGER_OPS = ("ConvInteger", "MatMulInteger")
# the run-time bias chain, from the int32 Add back to the float bias: Reshape <- Cast <- Floor <- Div(b, s)
BIAS_CHAIN = ("Reshape", "Cast", "Floor", "Round")
REFUSED = {
    "QAttention": "ONNX Runtime's quantized fused Attention (onnxruntime.transformers' optimizer output) has no "
                  "lowering here; quantize or convert the model before attention is fused",
    "QEmbedLayerNormalization": "ONNX Runtime's quantized fused EmbedLayerNormalization (onnxruntime.transformers' "
                                "optimizer output) has no lowering here; convert the model before it is fused",
}


@dataclass(frozen=True)
class RunTime:
    """A tensor quantized in front of integer ops: ``x`` with ``scale`` / ``zero_point`` computed at
    run time, or constant (the 2020 quantizer's ``static=True`` IntegerOps form: the rescale
    multiplies by it all the same; the model is calibrated like a dynamic one)."""
    x: str
    scale: str
    zero_point: str
    computed: bool              # QuantizeLinear on a computed scale (else DynamicQuantizeLinear)


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
            reader.problems.append(f"{_where(node)}: {found}")
            barriers.add(k)                      # listed once, not again at every reader downstream
            continue
        reader.rescales[node.output[0]] = found
        _dequantize_gathered(reader, node, found, gathered, nodes)
        if node.op_type == "ConvInteger" and found.bias is None and node.input[1] in reader.consts:
            found.chain |= _fold_float_bias(reader, found, reader.consts[node.input[1]].ndim, nodes, producers)
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
            reader.problems.append(f"{_where(nodes[k])}: reads '{first}', a value computed from run-time "
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
        zp = _const_input(reader, node, operand + 2)
        table = nodes[k].input[0]
        floats = fresh(reader, f"{table}_dequantized")
        scale = r.scale if takes_scale and r.scale is not None else 1.0
        reader.new_consts[floats] = reader.consts[floats] = dequantize_const(reader.consts[table], scale, zp, None)
        lookup = helper.make_node("Gather", [floats, *nodes[k].input[1:]], list(nodes[k].output), name=nodes[k].name)
        lookup.attribute.extend(nodes[k].attribute)
        reader.replace[k] = lookup
        reader.gathered.add(name)


def _fold_float_bias(reader, r: Rescale, rank: int, nodes, producers) -> set[int]:
    """Current quantize_dynamic adds a Conv's bias after the rescale: ``Add(y, Reshape(b, [1, -1, 1, 1]))``.
    Fold it into the Conv (one int32 bias rather than an int8 Add); returns the nodes absorbed."""
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
    shape = (1,) * (rank - value.ndim) + value.shape
    if value.ndim > rank or shape[1] != value.size:
        return set()                     # not one value per output channel: an ordinary Add
    r.bias, r.out = value.astype(np.float32).reshape(-1), add.output[0]
    return absorbed


# --- handlers ----------------------------------------------------------------------------------
def run_time_quantize(reader, node) -> None:
    """``y = DynamicQuantizeLinear(x)`` or a QuantizeLinear on a run-time scale: y is x."""
    reader.forms.add("dynamic")
    reader.union(node.input[0], node.output[0])


def _where(node) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"


def _operand(reader, node, k: int, scale, zp_index: int, axis: int | None) -> str | None:
    """The float tensor an integer op's operand ``k`` stands for: x itself when quantized at run
    time, else its dequantized constant (per channel along ``axis`` when the scale is a vector);
    None when it is neither (listed as a problem)."""
    name = node.input[k]
    if name in reader.run_time or name in reader.gathered:
        return name
    if name not in reader.consts or scale is None:
        reader.problems.append(f"{_where(node)}: input '{name}' is neither quantized at run time nor a constant "
                               "with a constant scale")
        return None
    q = reader.consts[name]
    zp = _const_input(reader, node, zp_index)
    per_channel = np.asarray(scale).size > 1
    if per_channel and axis is None:
        reader.problems.append(f"{_where(node)}: per-channel scales on input {k} run along an axis the op "
                               "does not keep")
        return None
    out = fresh(reader, f"{name}_dequantized")
    reader.new_consts[out] = reader.consts[out] = dequantize_const(q, scale, zp, axis if per_channel else None)
    reader.record_grid(out, q, scale, zp, axis if per_channel else None)
    return out


def _last_axis(reader, name: str) -> int | None:
    """The output-column axis of a MatMul's constant B (its per-column scales run along it)."""
    return reader.consts[name].ndim - 1 if name in reader.consts else None


def integer(reader, node) -> None:
    """ConvInteger / MatMulInteger and their rescale -> Conv / MatMul (+ bias)."""
    r = reader.rescales.get(node.output[0])
    if r is None:
        return                                           # already listed as a problem
    is_conv = node.op_type == "ConvInteger"
    axis = 0 if is_conv else _last_axis(reader, node.input[1])
    inputs = [_operand(reader, node, 0, r.scale, 2, None), _operand(reader, node, 1, r.scale, 3, axis)]
    if None not in inputs:
        _emit_with_bias(reader, node, "Conv" if is_conv else "MatMul", inputs, r.bias, r.out,
                        node.attribute if is_conv else ())


def _emit_with_bias(reader, node, op: str, inputs: list[str], bias, out: str, attributes=()) -> None:
    """``op`` writing ``out``; a bias goes into a Conv, after a MatMul as an Add."""
    name, written, add = node.name or f"{out}_{op}", out, None
    if bias is not None:
        b = fresh(reader, f"{out}_bias")
        reader.new_consts[b] = reader.consts[b] = np.asarray(bias, np.float32)
        if op == "Conv":
            inputs = [*inputs, b]
        else:
            written = f"{out}_before_bias"
            add = helper.make_node("Add", [written, b], [out], name=f"{name}_bias")
    float_node = helper.make_node(op, inputs, [written], name=name)
    float_node.attribute.extend(attributes)
    reader.forms.add("dynamic")
    reader.emit(float_node, int8=True)
    if add is not None:
        reader.emit(add, int8=True)


def _const_input(reader, node, index: int):
    """A constant input's value, None when absent or computed (a computed one is not listed here:
    ``_operand`` names the operand it belongs to)."""
    name = node.input[index] if index < len(node.input) else ""
    return reader.consts.get(name) if name else None


def dynamic_quantize_matmul(reader, node) -> None:
    """com.microsoft.DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias) -> MatMul (+ Add)."""
    b = _operand(reader, node, 1, _const_input(reader, node, 2), 3, _last_axis(reader, node.input[1]))
    if b is not None:
        _emit_with_bias(reader, node, "MatMul", [node.input[0], b], _const_input(reader, node, 4), node.output[0])


def matmul_integer_to_float(reader, node) -> None:
    """com.microsoft.MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp, bias) -> MatMul (+ Add);
    a run-time quantized operand is its float tensor (its scale input is the run-time one)."""
    inputs = [_operand(reader, node, 0, _const_input(reader, node, 2), 4, None),
              _operand(reader, node, 1, _const_input(reader, node, 3), 5, _last_axis(reader, node.input[1]))]
    if None not in inputs:
        _emit_with_bias(reader, node, "MatMul", inputs, _const_input(reader, node, 6), node.output[0])


def dynamic_quantize_lstm(reader, node) -> None:
    """com.microsoft.DynamicQuantizeLSTM -> LSTM with W, R dequantized and back in ONNX's layout."""
    where = _where(node)
    ins = list(node.input) + [""] * (12 - len(node.input))
    weights = []
    for k, scale_index in ((1, 8), (2, 10)):
        if ins[k] not in reader.consts or reader.param(node, scale_index) is None:
            reader.problems.append(f"{where}: {'WR'[k - 1]} and its scale must be constant")
            return
        zp = reader.param(node, scale_index + 1) if ins[scale_index + 1] else None
        value = lstm_weights(reader.consts[ins[k]], reader.param(node, scale_index), zp)
        if value is None:
            reader.problems.append(f"{where}: {'WR'[k - 1]} scales are neither per direction nor per gate row")
            return
        name = fresh(reader, f"{ins[k]}_dequantized")
        reader.new_consts[name] = reader.consts[name] = value
        weights.append(name)
    inputs = [ins[0], *weights, *ins[3:8]]
    while inputs and not inputs[-1]:
        inputs.pop()
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name or f"{node.output[0]}_LSTM")
    lstm.attribute.extend(node.attribute)
    reader.forms.add("dynamic")
    reader.emit(lstm, int8=True)


def lstm_weights(q: np.ndarray, scale, zp) -> np.ndarray | None:
    """[directions, rows, 4*hidden] integers with scales per direction ([D]) or per direction and
    gate row ([D, 4*hidden]) -> float [directions, 4*hidden, rows] (ONNX LSTM's W/R layout)."""
    if q.ndim != 3:
        return None
    d, _, gates = q.shape
    s = np.asarray(scale, np.float64)
    z = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64)
    shape = {d: (d, 1, 1), d * gates: (d, 1, gates)}
    if s.size not in shape or z.size not in (1, *shape):
        return None
    z = z.reshape(shape[z.size]) if z.size in shape else z.reshape(())
    value = (q.astype(np.int64) - z) * s.reshape(shape[s.size])
    return np.ascontiguousarray(value.astype(np.float32).transpose(0, 2, 1))


def refuse(reader, node) -> None:
    reader.problems.append(f"{node.name or node.output[0]} ({node.domain}.{node.op_type}): {REFUSED[node.op_type]}")


HANDLERS = {"DynamicQuantizeLinear": run_time_quantize, "ConvInteger": integer, "MatMulInteger": integer,
            "DynamicQuantizeLSTM": dynamic_quantize_lstm, "DynamicQuantizeMatMul": dynamic_quantize_matmul,
            "MatMulIntegerToFloat": matmul_integer_to_float, **{op: refuse for op in REFUSED}}
DOMAINS = {"DynamicQuantizeLinear": STD, "ConvInteger": STD, "MatMulInteger": STD,
           **{op: (MS,) for op in HANDLERS if op not in ("DynamicQuantizeLinear", *INTEGER_OPS)}}
