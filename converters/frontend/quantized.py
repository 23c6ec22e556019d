"""Already-quantized ONNX: read a QDQ / QOperator / dynamic model as a float graph + what it carries.

    is_quantized(model) -> bool               any Q/DQ, QLinear*, *Integer or DynamicQuantizeLinear node
    file_is_quantized(path) -> bool           the same for a file (the config's "--calib optional")
    dequantize(model) -> (float model, Carried | None)   shapes inferred, notes warned
    rewrite(model) -> (float model, Carried | None)      the same, neither

The converter compiles float graphs. A quantized model is rewritten into the float graph it stands
for, and its quantization parameters are kept aside (``converters.carried.Carried``) so the int8
backends write them back:

* ``x -> QuantizeLinear -> DequantizeLinear -> op``: the Q/DQ pair disappears, ``op`` reads ``x``,
  and ``x`` carries the pair's (scale, zero point). Every name linked by Q/DQ is one float value
  (a union-find); it is called by its graph output/input name, else by the float tensor the model
  computed it as (the names of the float model it was quantized from).
* ``DequantizeLinear(int8 initializer)``: a float initializer ``q * scale``; symmetric int8
  (zero point 0, |q| <= 127) keeps its scales as the weight's grid. ``QuantizeLinear(float
  initializer)`` (fake-quantized weights of QAT exports) is folded first.
* QOperator forms (``qoperator.py``): QLinearConv -> Conv with dequantized weights and bias,
  QLinearAdd -> Add, ...; their input and output scales become the tensors' parameters.
* Dynamic forms (``qdynamic.py``, every form ``quantize_dynamic`` has written): ConvInteger /
  MatMulInteger with their rescale -> Conv / MatMul, DynamicQuantizeLSTM -> LSTM, ...; the
  weights are dequantized and the activations carry no parameters.
* ONNX Runtime drops a Relu in front of a Q whose zero point is the range floor (the clamp is in
  the Q). Such a Q after a Conv/Gemm/MatMul/Add/Sub/Mul/BatchNormalization gets its Relu back, so
  the float model computes what the quantized one does (the backends fuse it again).

Nodes the model runs in float (no parameters on their outputs, e.g. a trailing Softmax of a mixed
graph) are listed in ``Carried.float_nodes``; tensors int8 nodes need that carry nothing and no
tie fills are listed in ``Carried.unannotated`` (calibration data fills them; without it
``converters.api`` names them all in one error).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.carried import ActParams, Carried, WeightGrid, warn
from converters.errors import ConvertError, UnsupportedOpsError
from converters.frontend import qdynamic, qfinish, qoperator, qrescale, shapes
from converters.frontend.qrescale import MOVES
from converters.frontend.qoperator import along, dequantize_const

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
HANDLERS = {**qoperator.HANDLERS, **qdynamic.HANDLERS}
DOMAINS = {**qoperator.DOMAINS, **qdynamic.DOMAINS}
LIST_AT_MOST = 12


def _quant_op(node) -> bool:
    return node.op_type in QDQ_OPS or node.op_type in HANDLERS


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(_quant_op(n) for n in model.graph.node)


def file_is_quantized(path) -> bool:
    """Whether the ONNX file at ``path`` is quantized; False when it cannot be read (loading
    reports that properly later). External data is not opened."""
    try:
        return is_quantized(onnx.load(str(Path(path)), load_external_data=False))
    except Exception:                   # a missing or corrupt file: load_model explains it
        return False


def with_ir4(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's quantizer adds scale/zero-point initializers that are no graph inputs but
    keeps an old model's IR version 3, which forbids that (the checker refuses it; onnxruntime runs
    it). IR 4 allows it and changes nothing else: a quantized IR-3 model comes back as an IR-4 copy."""
    if model.ir_version >= 4 or not is_quantized(model):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = 4
    return copy


def dequantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Carried | None]:
    """A QDQ / QOperator / dynamic model as the float graph it computes, shapes inferred, and the
    parameters it carries; a float model comes back as it is, with None. What cannot be kept as
    the model has it is said once, as a ``CarriedScaleWarning``."""
    model, carried = rewrite(model)
    if carried is None:
        return model, None
    for note in carried.notes:
        warn(note)
    return restore_gemms(shapes.infer(model), carried.split_gemms), carried


def restore_gemms(model: onnx.ModelProto, pairs) -> onnx.ModelProto:
    """``MatMul(A, B) -> Add(b)`` pairs the reader wrote for a Gemm that ``quantize_dynamic`` split
    (or a fused MatMul with a bias) become ``Gemm(A, B, b)`` where A is 2-D (known once shapes are
    inferred; a Gemm takes nothing else): TFLite's FULLY_CONNECTED then adds the bias in int32
    instead of an int8 ADD (+0.6 dB on common_old.onnx). In place; the model is returned."""
    g = model.graph
    weights = {i.name: len(i.dims) for i in g.initializer}
    by_name = {n.name: n for n in g.node}
    swap, drop = {}, set()
    for mm_name, add_name in pairs:
        mm, add = by_name.get(mm_name), by_name.get(add_name)
        if mm is None or add is None or _rank(g, mm.input[0]) != 2 or weights.get(mm.input[1]) != 2:
            continue
        swap[mm_name] = helper.make_node("Gemm", [mm.input[0], mm.input[1], add.input[1]], list(add.output),
                                         name=mm_name)
        drop.add(add_name)
    if swap:
        gone = {by_name[name].output[0] for name in swap}
        nodes = [swap.get(n.name, n) for n in g.node if n.name not in drop]
        infos = [v for v in g.value_info if v.name not in gone]
        del g.node[:], g.value_info[:]
        g.node.extend(nodes)
        g.value_info.extend(infos)
    return model


def _rank(g, name: str) -> int | None:
    """The rank of tensor ``name``: inferred, else that of a Reshape's target (its shape input's
    length; ONNX inference leaves a Reshape to a computed shape rankless), else None."""
    infos = {v.name: v.type.tensor_type for v in [*g.input, *g.value_info]}
    if name in infos and infos[name].HasField("shape"):
        return len(infos[name].shape.dim)
    producer = next((n for n in g.node if name in n.output), None)
    if producer is None or producer.op_type != "Reshape" or producer.input[1] not in infos:
        return None
    dims = infos[producer.input[1]].shape.dim
    return dims[0].dim_value if len(dims) == 1 and dims[0].HasField("dim_value") else None


def rewrite(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Carried | None]:
    """``dequantize`` without shape inference and warnings (the notes stay in ``Carried.notes``)."""
    if not is_quantized(model):
        return model, None
    reader = _Reader(model)
    reader.read()
    return reader.finish()


class _Reader:
    """One pass over the nodes (Q/DQ and QOperator rewritten, the rest copied), then ``finish``."""

    def __init__(self, model: onnx.ModelProto):
        self.model, g = model, model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.attribute:
                self.consts[n.output[0]] = _constant(n)
            elif n.op_type == "Identity" and n.input[0] in self.consts:   # torch.onnx shares zero points so
                self.consts[n.output[0]] = self.consts[n.input[0]]
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.parent: dict[str, str] = {}
        self.decl: dict[str, list[ActParams]] = {}
        self.nodes: list = []
        self.real: set[str] = set()          # tensors a non-Q/DQ node computes
        self.new_consts: dict[str, np.ndarray] = {}
        self.grids: dict[str, WeightGrid] = {}
        self.bias_scales: dict[str, np.ndarray] = {}
        self.int8_nodes: set[str] = set()
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.asymmetric: list[tuple[str, str]] = []   # (weights, dtype) requantized: one note in finish
        self.forms: set[str] = set()
        self.skip: set[int] = set()          # positions of nodes a pattern absorbed (qrescale.prepare)
        self.run_time: dict[str, qrescale.RunTime] = {}   # tensors quantized at run time, by quantized name
        self.rescales: dict[str, qrescale.Rescale] = {}   # integer op output -> its rescale
        self.replace: dict[int, onnx.NodeProto] = {}      # position -> the node read instead (qrescale)
        self.gathered: set[str] = set()                   # integer operands that are float lookups now
        self.split_gemms: list[tuple[str, str]] = []      # (MatMul, Add) written for one Gemm: restore_gemms

    # --- union-find over names that hold one float value ------------------------------------
    def find(self, x: str) -> str:
        while self.parent.get(x, x) != x:
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def declare(self, name: str, scale, zero_point, dtype: str, where: str) -> None:
        s, z = np.asarray(scale).reshape(-1), np.asarray(zero_point).reshape(-1)
        if s.size != 1 or z.size > 1:
            self.problems.append(f"{where}: per-channel activation quantization of '{name}' "
                                 "(TFLite int8 activations are per tensor)")
            return
        zp = int(z[0]) if z.size else 0
        self.decl.setdefault(name, []).append(ActParams.from_model(float(s[0]), zp, dtype))

    # --- reading ----------------------------------------------------------------------------
    def read(self) -> None:
        qrescale.prepare(self)
        for k, node in enumerate(self.model.graph.node):
            if k in self.skip:
                continue
            if k in self.replace:                 # an embedding lookup of a MatMulInteger, on its float table
                self.emit(self.replace[k])
                continue
            if node.op_type == "QuantizeLinear":
                self._quantize(node)
            elif node.op_type == "DequantizeLinear":
                self._dequantize(node)
            elif node.op_type in HANDLERS and node.domain in DOMAINS[node.op_type]:
                HANDLERS[node.op_type](self, node)
            elif node.domain not in ("", "ai.onnx"):
                self.problems.append(f"{node.name} ({node.domain}.{node.op_type}): not a quantized op "
                                     "this converter reads")
            else:
                self.emit(node)
        if self.problems:
            raise UnsupportedOpsError(self.problems, where="quantized model",
                                      hint="these quantized nodes have no float equivalent here; export the "
                                           "model in QDQ form (quantize_static(quant_format=QDQ)) or in float")

    def emit(self, node, int8: bool = False) -> None:
        self.nodes.append(node)
        self.real.update(o for o in node.output if o)
        if int8:
            self.int8_nodes.add(node.name)

    def param(self, node, index: int, default=None):
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            return default
        if name not in self.consts:
            self.problems.append(f"{node.name} ({node.op_type}): input {index} '{name}' must be a constant")
            return default
        return self.consts[name]

    def int_type(self, quantized: str, zp) -> str:
        """The integer type of a quantized tensor: its zero point's, else its inferred type (a Q
        without zero point may set ``output_dtype``), else uint8 (the spec's default)."""
        if zp is not None:
            return str(np.asarray(zp).dtype)
        if self.types.get(quantized):
            return str(np.dtype(helper.tensor_dtype_to_np_dtype(self.types[quantized])))
        return "uint8"

    def _blocked(self, node) -> bool:
        if any(a.name == "block_size" and a.i for a in node.attribute):
            self.problems.append(f"{node.name} ({node.op_type}): blocked quantization (block_size) is not supported")
            return True
        return False

    def _quantize(self, node) -> None:
        x, out = node.input[0], node.output[0]
        if out in self.run_time:                  # quantize_dynamic's QuantizeLinear on a computed scale
            qdynamic.run_time_quantize(self, node)
            return
        scale, zp = self.param(node, 1), self.param(node, 2)
        if scale is None or self._blocked(node):
            return
        zp = zp if zp is not None else np.zeros((), self.int_type(out, None))
        if x in self.consts:                      # fake-quantized weights (QAT): fold
            self.consts[out] = _quantize_const(self.consts[x], scale, zp, _axis(node, self.consts[x]))
            return
        self.forms.add("qdq")
        self.union(x, out)
        self.declare(x, scale, zp, self.int_type(out, zp), node.name)

    def _dequantize(self, node) -> None:
        x, out = node.input[0], node.output[0]
        scale, zp = self.param(node, 1), self.param(node, 2)
        if scale is None or self._blocked(node):
            return
        if x in self.consts:
            q = self.consts[x]
            axis = _axis(node, q)
            value = dequantize_const(q, scale, zp, axis)
            self.consts[out] = self.new_consts[out] = value
            self.record_grid(out, q, scale, zp, axis)
            return
        if self._gathered_weights(node, scale, zp):
            return
        self.forms.add("qdq")
        self.union(x, out)
        self.declare(x, scale, zp if zp is not None else 0, self.int_type(x, zp), node.name)

    def _gathered_weights(self, node, scale, zp) -> bool:
        """``DequantizeLinear(Gather(int table, ids))`` with per-tensor parameters, as ONNX Runtime's
        ``quantize_dynamic`` writes an embedding lookup, possibly through Transpose/Reshape/... that
        move its integers (ONNX Runtime's Direct8BitOp): the same as ``Gather(float table, ids)``
        and the same moves (a per-tensor dequantization commutes with indexing and moving). The
        Gather reads the dequantized table, the last node writes the DQ's output; its values lie
        on the table's grid (declared)."""
        x, out = node.input[0], node.output[0]
        producer = {o: k for k, n in enumerate(self.nodes) for o in n.output}
        last = k = producer.get(x)
        while k is not None and self.nodes[k].op_type in MOVES and self._only_reader(self.nodes[k].output[0]):
            k = producer.get(self.nodes[k].input[0])
        gather = self.nodes[k] if k is not None else None
        if (gather is None or gather.op_type != "Gather" or gather.input[0] not in self.consts
                or np.asarray(scale).size != 1 or not self._only_reader(gather.output[0])):
            return False
        table = gather.input[0]
        floats = f"{table}_dequantized"
        if floats not in self.consts:
            q = self.consts[table]
            self.consts[floats] = self.new_consts[floats] = dequantize_const(q, scale, zp, None)
        for index, field, value in ((k, "input", floats), (last, "output", out)):
            copy = onnx.NodeProto()
            copy.CopyFrom(self.nodes[index])
            getattr(copy, field)[0] = value
            self.nodes[index] = copy
        self.real.add(out)
        self.declare(out, scale, zp if zp is not None else 0, self.int_type(x, zp), node.name)
        return True

    def _only_reader(self, name: str) -> bool:
        return len(self.consumers.get(name, ())) == 1

    def record_grid(self, name: str, q: np.ndarray, scale, zp, axis) -> None:
        """Keep the grid of symmetric int8 weights; say why any other weights are requantized."""
        s = np.asarray(scale, np.float32).reshape(-1)
        symmetric = q.dtype == np.int8 and (zp is None or not np.any(np.asarray(zp)))
        if q.dtype == np.int32:
            self.bias_scales[name] = s
        elif symmetric:
            self.grids[name] = WeightGrid(s, axis if s.size > 1 else None, q)
            clamped = int(np.count_nonzero(q == -128))
            if clamped:                  # torch.onnx allows only [-128, 127] for int8 fake quantization
                self.notes.append(f"weights '{name}': {clamped} value(s) of -128 become -127 (TFLite int8 weights are "
                                  "in [-127, 127]); the model's scales are kept")
        elif q.ndim >= 2:
            self.asymmetric.append((name, str(q.dtype)))

    def finish(self) -> tuple[onnx.ModelProto, Carried]:
        if self.asymmetric:             # one note for all: quantize_dynamic's uint8 weights are every Conv's
            names = [f"'{n}'" for n, _ in self.asymmetric]
            more = f" and {len(names) - LIST_AT_MOST} more" if len(names) > LIST_AT_MOST else ""
            kinds = "/".join(sorted({t for _, t in self.asymmetric}))
            self.notes.append(f"weights {', '.join(names[:LIST_AT_MOST])}{more} are requantized to symmetric int8 "
                              f"(the TFLite int8 spec): they are {kinds} with a non-zero zero point")
        return qfinish.finish(self)     # the second half: names, parameters, ties, the graph


def _axis(node, value: np.ndarray) -> int:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return axis % value.ndim if value.ndim else 0


def _quantize_const(x: np.ndarray, scale, zp, axis: int) -> np.ndarray:
    zp = np.asarray(zp)
    info = np.iinfo(zp.dtype)
    s = along(np.asarray(scale, np.float64), axis, x.ndim)
    q = np.rint(x.astype(np.float64) / s) + along(zp.astype(np.int64), axis, x.ndim)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _constant(node) -> np.ndarray:
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    return np.asarray(helper.get_attribute_value(attr))


def check_annotated(carried: Carried) -> None:
    """Without calibration data every tensor an int8 node needs must carry parameters: else one
    error names them all (a dynamically quantized model stores none)."""
    missing = list(carried.unannotated)
    if not missing:
        return
    shown = ", ".join(f"'{m}'" for m in missing[:LIST_AT_MOST])
    more = f" and {len(missing) - LIST_AT_MOST} more" if len(missing) > LIST_AT_MOST else ""
    if carried.static:
        message = (f"{len(missing)} tensor(s) read or written by int8 nodes carry no scale in the model and "
                   f"none follows from their neighbours: {shown}{more}")
        hint = "pass --calib DATA to measure them (the model's own scales are still kept)"
    else:
        message = (f"the model is quantized with run-time ({carried.form}) activation scales: it stores no "
                   f"range for {len(missing)} activation tensor(s) ({shown}{more})")
        hint = ("pass --calib DATA for a full-int8 model (its int8 weights are kept), or --quantize dynamic "
                "for int8 weights with activations quantized at run time, as the model does")
    raise ConvertError(message, code="convert.prequant_ranges", where="quantized model", hint=hint)
