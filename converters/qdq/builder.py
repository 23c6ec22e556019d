"""Write an int8 QDQ ONNX model from a float ONNX model and calibration ranges.

The float graph is the one the TFLite writer lowers: the converter's IR after the passes both
targets share (BatchNormalization folded, Identity dropped, constants folded, ...), written back
as ONNX by ``emit.py``. Quantization is expressed with ONNX QuantizeLinear / DequantizeLinear
(opset >= 13, for per-channel scales):

    activation x read by a quantized op:  x -> QuantizeLinear -> DequantizeLinear -> op
    weight W of Conv/Gemm/MatMul:         DequantizeLinear(int8 initializer, per-channel scale) -> op
    bias B:                               DequantizeLinear(int32 initializer, in_scale * w_scale)
                                          (profile "onnxruntime") or left float (profile "tensorrt")

This is the explicit-quantization form TensorRT builds int8 engines from (its non-deprecated
path) and the form ONNX Runtime fuses into QLinearConv / QGemm / int8 pooling kernels.
Graph outputs stay float (the last op dequantizes), so the model keeps its ONNX signature.

Every scale, zero point and bias is the TFLite build's (``shared.py``: one compiler, two
writers); the profile only changes their form and where the Q/DQ pairs go.

Profiles (``PROFILES``):
    tensorrt     symmetric activations (zero point 0: TensorRT supports no other), each amax
                 chosen from a histogram when samples are given (``amax.py``); Q/DQ only in front
                 of weighted ops (``ops.TENSORRT_INPUTS``, TensorRT's placement); float bias
                 (TensorRT folds the bias in float; it parses no int32 DequantizeLinear)
    onnxruntime  asymmetric uint8 activations, int8 weights, int32 bias: ORT's CPU kernels are
                 U8S8 (int8 activations leave residual Adds and their Convs in float), an
                 asymmetric range gives one-sided tensors such as ReLU outputs all 256 levels,
                 and ORT folds Relu/Clip into the Q when the zero point is the range floor
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters import tflite
from converters.errors import ConvertError
from converters.frontend.names import check_keep_float
from converters.frontend.subgraphs import descendants, local_names
from converters.qdq import amax, emit, ops, params, shared
from converters.qdq.shared import Shared
from core.errors import UsageError

FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class Profile:
    symmetric_activations: bool
    activation_dtype: str
    int32_bias: bool
    placement: str          # "tensorrt": ops.TENSORRT_INPUTS (+ residual Adds); "all": ops.ACTIVATION_INPUTS


PROFILES = {
    "tensorrt": Profile(symmetric_activations=True, activation_dtype="int8", int32_bias=False, placement="tensorrt"),
    "onnxruntime": Profile(symmetric_activations=False, activation_dtype="uint8", int32_bias=True, placement="all"),
}


def build(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], *,
          keep_float=(), profile: str = "tensorrt", samples: list[dict] | None = None,
          weight_scales: dict | None = None, tflite=None) -> onnx.ModelProto:
    """An int8 QDQ copy of ``model``; nodes named in ``keep_float`` stay float.

    The graph is the converter's IR after the passes both targets share, written back as ONNX
    (``emit.py``); the parameters are the TFLite build's (``shared.py``): ``tflite`` is that
    build's ``TFLiteResult`` (same model, ranges, samples and keep_float), else it is built here.
    With ``samples`` (the calibration feeds) that build measures its own temporaries and corrects
    the biases of its layers for their weights' rounding; the QDQ model carries the corrected
    biases. ``weight_scales`` (initializer -> ``carried.WeightGrid``): an already-quantized
    model's weights keep their own int8 values and scales."""
    if profile not in PROFILES:
        raise UsageError(f"unknown QDQ profile {profile!r}", hint=f"choose one of {sorted(PROFILES)}")
    keep = check_keep_float(model, keep_float)
    source = _shared(model, ranges, keep, samples, tflite)
    model, keep = _float_graph(model, keep)
    writer = _Writer(model.graph, _propagate_same_scale(model.graph, ranges, keep), PROFILES[profile], keep, source)
    writer.carried = dict(weight_scales or {})
    if PROFILES[profile].symmetric_activations and samples:
        writer.clip(amax.choose(model, sorted(writer.act), samples))
    writer.rewrite()
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "ganglion.qdq.profile": profile})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConvertError(f"the QDQ model failed the ONNX checker: {exc}", code="convert.qdq",
                           hint="this is a converter bug; keep the failing node float with --keep-float") from exc
    return model


def _shared(model, ranges, keep: frozenset, samples, result) -> Shared:
    """The TFLite build's parameters; none when the TFLite lowering refuses the model (an op it
    has no lowering for): the writer then applies the same functions to the ranges itself."""
    if result is None:
        try:
            result = tflite.build(model, ranges, tflite.TFLiteOptions(keep_float=keep), samples=samples)
        except ConvertError:
            return Shared()
    return shared.read(result.flatbuffer, result.tensor_map, result.op_nodes)


def _float_graph(model: onnx.ModelProto, keep: frozenset) -> tuple[onnx.ModelProto, frozenset]:
    """(the float graph the Q/DQ pairs go into: the IR after the shared passes, written back by
    ``emit.py``; ``keep`` named in it). A model the frontend refuses (``build`` called on a model
    ``frontend.load_model`` did not prepare: a dynamic input shape, an opset below 11) raises the
    frontend's own error, as the TFLite target does."""
    graph = emit.ir_graph(model)
    written, origin = emit.emit(graph, model)
    kept = _kept_ir_nodes(graph, keep)
    return written, frozenset(name for name, ir in origin.items() if ir in kept)


# op -> the suffix a node of that op made from another gets (passes/fuse_conv_bn.py's BN as Mul + Add,
# frontend/quirks.py's legacy Softmax Reshapes)
_MADE_FROM = {"Mul": r"_mul$", "Add": r"_add$", "Reshape": r"_(un)?flatten__\d+$"}


def _kept_ir_nodes(graph, keep: frozenset) -> set[str]:
    """IR nodes that hold an ONNX node of ``keep``: the node itself, a fusion that absorbed it
    (Conv+BN, GELU, and the Relu/Clip the TFLite build fuses into its producer: one TFLite op, so
    keeping either keeps both, as there), or a node a pass or the frontend made from it
    ("<name>/MatMul__3" of an Einsum, "<name>/then/..." of an inlined If, "<name>_mul"/"<name>_add"
    of a BatchNormalization, a legacy Softmax's Reshapes)."""
    fused = emit.fused_activations(graph)
    found = set()
    for n in graph.nodes:
        made = _MADE_FROM.get(n.op)
        base = re.sub(made, "", n.name) if made else n.name
        if ({n.name, base, *n.attrs.get("_absorbed", []), *fused.get(n.name, ())} & keep
                or any(n.name.startswith(k + "/") for k in keep)):
            found.add(n.name)
            found.update(fused.get(n.name, ()))
    return found


def _propagate_same_scale(graph, ranges: dict, keep: frozenset) -> dict:
    """Outputs of value-moving ops reuse their input's range (see ops.SAME_SCALE)."""
    ranges = dict(ranges)
    for node in graph.node:
        if node.op_type in ops.SAME_SCALE and node.name not in keep and node.input[0] in ranges:
            for out in node.output:
                if out in ranges:
                    ranges[out] = ranges[node.input[0]]
    return ranges


class _Writer:
    """One rewrite of one graph: plans the activation Q/DQ pairs, then rebuilds the node list."""

    def __init__(self, graph, ranges: dict, profile: Profile, keep: frozenset, source: Shared):
        self.graph, self.ranges, self.profile, self.keep = graph, ranges, profile, keep
        self.source = source
        self.inits = {i.name: i for i in graph.initializer}
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
        self.types.update({i.name: i.data_type for i in graph.initializer})
        self.names = {n for node in graph.node for n in list(node.input) + list(node.output)}
        self.names |= set(self.inits) | {vi.name for vi in graph.input}
        # a new name must not be one a subgraph defines: ONNX forbids shadowing an outer name
        self.names |= {name for sub in descendants(graph) for name in local_names(sub)}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.new_inits: list = []
        self.weight_cache: dict = {}     # (initializer, axis) -> (dequantized name, params)
        self.carried: dict = {}          # initializer -> carried.WeightGrid (already-quantized models)
        self.q_out: dict[str, tuple] = {}  # activation -> (QuantizeLinear output, scale, zero point)
        self.act = self._plan_activations()

    # --- planning ---------------------------------------------------------------------------
    def data_inputs(self, node) -> tuple[int, ...]:
        """The input indexes of ``node`` that get Q/DQ (and whose constants get int8)."""
        if node.name in self.keep:
            return ()
        if self.profile.placement == "tensorrt":
            return self.residual.get(node.name) or ops.TENSORRT_INPUTS.get(node.op_type, ())
        return tuple(ops.activation_inputs(node)) if node.op_type in ops.ACTIVATION_INPUTS else ()

    def quantized(self, node) -> bool:
        return bool(self.data_inputs(node))

    def _plan_activations(self) -> dict[str, params.QuantParams]:
        self.residual: dict[str, tuple[int, ...]] = {}
        act = {}
        for node in self.graph.node:
            for i in self.data_inputs(node):
                name = node.input[i] if i < len(node.input) else ""
                if (name and name not in self.inits and self.types.get(name) == FLOAT
                        and (name in self.ranges or name in self.source.activations)
                        and not self._fused_away(name)):
                    act[name] = self._activation(name)
        if self.profile.placement == "tensorrt":
            # TensorRT fuses a residual Add into the Conv before it when the Add's other input
            # is int8: give it the Q/DQ that input already has for a Conv (free: same values)
            for node in self.graph.node:
                if node.op_type == "Add" and node.name not in self.keep:
                    found = tuple(i for i, name in enumerate(node.input) if name in act)
                    if found:
                        self.residual[node.name] = found
        return act

    def clip(self, amaxes: dict[str, float]) -> None:
        """Symmetric activations: each tensor's scale from its chosen amax (``amax.py``)."""
        for name, value in amaxes.items():
            if name in self.act:
                self.act[name] = params.symmetric_params(value)

    def _activation(self, name: str) -> params.QuantParams:
        """The TFLite build's int8 grid for ``name`` (else the shared function's, from its range)."""
        grid = self._grid(name) or params.int8_grid(*self.ranges[name])
        return params.for_profile(*grid, symmetric=self.profile.symmetric_activations,
                                  dtype=self.profile.activation_dtype)

    def _grid(self, name: str) -> tuple[float, int] | None:
        """The TFLite grid of ``name`` or, for the output of a value-moving op the lowering
        renamed or removed (a Flatten), of that op's input: TFLite ties them to one grid."""
        while name not in self.source.activations:
            producer = self.producer.get(name)
            if producer is None or producer.op_type not in ops.SAME_SCALE or producer.name in self.keep:
                return None
            name = producer.input[0]
        return self.source.activations[name]

    def _fused_away(self, name: str) -> bool:
        """Conv -> Relu: no Q/DQ on the tensor between them (the activation is fused)."""
        producer = self.producer.get(name)
        users = self.consumers.get(name, [])
        return (producer is not None and producer.op_type in ops.FUSING_PRODUCERS
                and self.quantized(producer) and name not in self.outputs and len(users) == 1
                and users[0].op_type in ops.FUSED_ACTIVATION and self.quantized(users[0]))

    # --- rewriting --------------------------------------------------------------------------
    def rewrite(self) -> None:
        self._matmul_bias_adds()
        nodes = []
        for vi in self.graph.input:
            if vi.name in self.act:
                nodes.extend(self._qdq(vi.name))
        for node in self.graph.node:
            nodes.extend(self._rewire(node))
            for out in node.output:
                if out in self.act:
                    nodes.extend(self._qdq(out))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self.new_inits)
        _drop_dead_initializers(self.graph)

    def _unique(self, base: str) -> str:
        return emit.unique_name(base, self.names)

    def _const(self, base: str, array: np.ndarray) -> str:
        name = self._unique(base)
        self.new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _qdq(self, name: str) -> list:
        """One QuantizeLinear right after the producer; each consumer gets its own DequantizeLinear."""
        p = self.act[name]
        scale, zp = self._const(f"{name}_scale", p.scale), self._const(f"{name}_zero_point", p.zero_point)
        q = self._unique(f"{name}_quantized")
        self.q_out[name] = (q, scale, zp)
        return [helper.make_node("QuantizeLinear", [name, scale, zp], [q], name=self._unique(f"{name}_QuantizeLinear"))]

    def _dq(self, name: str) -> tuple[str, list]:
        # A dedicated DequantizeLinear per consumer: ONNX Runtime's selectors and TensorRT's
        # fusions each claim the DQ of "their" node unit; a shared DQ blocks the fusion.
        q, scale, zp = self.q_out[name]
        dq = self._unique(f"{name}_dequantized")
        return dq, [helper.make_node("DequantizeLinear", [q, scale, zp], [dq],
                                     name=self._unique(f"{name}_DequantizeLinear"))]

    def _rewire(self, node) -> list:
        """The node with quantized inputs; DequantizeLinear nodes for its weights come first."""
        if not self.quantized(node):
            return [node]
        before, inputs = [], list(node.input)
        data = set(self.data_inputs(node))
        weight_axes = ops.WEIGHT_AXIS.get(node.op_type, {})
        local: dict[str, str] = {}
        for i, name in enumerate(inputs):
            if name in self.act and i in data:
                if name not in local:
                    local[name], extra = self._dq(name)
                    before.extend(extra)
                inputs[i] = local[name]
            elif name in self.inits and self.types.get(name) == FLOAT and i in weight_axes:
                inputs[i], extra = self._weight(name, weight_axes[i](node), node.name)
                before.extend(extra)
            elif name in self.inits and self.types.get(name) == FLOAT and i in data:
                inputs[i], extra = self._operand(name)
                before.extend(extra)
        bias_i = ops.BIAS_INPUT.get(node.op_type)
        if bias_i is not None:
            inputs = self._shared_bias(node, inputs, bias_i)
        if bias_i is not None and bias_i < len(inputs) and self._int32_bias_ok(node, inputs):
            inputs[bias_i], extra = self._bias(node, inputs)
            before.extend(extra)
        rewired = onnx.NodeProto()
        rewired.CopyFrom(node)
        del rewired.input[:]
        rewired.input.extend(inputs)
        return before + [rewired]

    def _weight(self, name: str, axis: int | None, owner: str = "") -> tuple[str, list]:
        array = numpy_helper.to_array(self.inits[name])
        if axis is not None and array.ndim < 2:
            axis = None
        if axis == -1 and array.ndim != 2:
            axis = None          # batched MatMul weights: one scale for all
        key = (name, axis)
        if key in self.weight_cache:          # a shared weight is dequantized once
            return self.weight_cache[key][0], []
        # a weight with a BatchNormalization folded in is "<weight>_bn__<k>" (passes/fuse_conv_bn.py)
        grid = self.carried.get(name) or self.carried.get(re.sub(r"_bn__\d+$", "", name))
        kept = params.carried_weight(array, axis, grid, name) if grid is not None else None
        layer = self.source.layers.get(owner)
        scales = layer.scales if layer is not None and params.fits(array, axis, layer.scales) else None
        q, p = kept or params.weight(array, axis, scales)
        out, nodes = self._dq_const(name, q, p)
        self.weight_cache[key] = (out, p)
        return out, nodes

    def _operand(self, name: str) -> tuple[str, list]:
        """A constant operand of an elementwise op or Concat (a folded anchor grid, a BatchNorm's
        scale): on the grid the TFLite build gave that tensor, else an activation grid over its
        own values, in the profile's form. (Weight-style symmetric int8 spent half its levels
        on the sign a one-sided constant lacks: the anchors of nudenet's YOLOv8n, 27.6 dB -> 27.9.)"""
        key = (name, "operand")
        if key in self.weight_cache:
            return self.weight_cache[key][0], []
        value = numpy_helper.to_array(self.inits[name]).astype(np.float32)
        grid = self.source.activations.get(name) or params.int8_grid(float(value.min(initial=0.0)),
                                                                    float(value.max(initial=0.0)))
        p = params.for_profile(*grid, symmetric=self.profile.symmetric_activations, dtype=self.profile.activation_dtype)
        info = np.iinfo(np.asarray(p.zero_point).dtype)
        q = np.clip(np.round(value / np.float32(p.scale)) + np.asarray(p.zero_point, np.int64), info.min, info.max)
        out, nodes = self._dq_const(name, q.astype(np.asarray(p.zero_point).dtype), p)
        self.weight_cache[key] = (out, p)
        return out, nodes

    def _dq_const(self, name: str, q: np.ndarray, p: params.QuantParams) -> tuple[str, list]:
        qname = self._const(f"{name}_quantized", q)
        scale, zp = self._const(f"{name}_scale", p.scale), self._const(f"{name}_zero_point", p.zero_point)
        out = self._unique(f"{name}_dequantized")
        attrs = {"axis": p.axis} if p.axis is not None else {}
        node = helper.make_node("DequantizeLinear", [qname, scale, zp], [out],
                                name=self._unique(f"{name}_DequantizeLinear"), **attrs)
        return out, [node]

    def _shared_bias(self, node, inputs: list, index: int) -> list:
        """``inputs`` with the bias the TFLite layer adds (bias-corrected there), when it has one
        of this node's length; Gemm only with alpha = beta = 1 (TFLite folds them in)."""
        layer = self.source.layers.get(node.name)
        if layer is None or layer.bias is None or (node.op_type == "Gemm" and not _unit_gemm(node)):
            return inputs
        old = inputs[index] if index < len(inputs) else ""
        if old and (old not in self.inits or numpy_helper.to_array(self.inits[old]).shape != layer.bias.shape):
            return inputs                 # a computed or broadcast bias: leave it
        name = self._const(f"{node.name or node.output[0]}_bias", layer.bias.astype(np.float32))
        self.inits[name], self.types[name] = self.new_inits[-1], FLOAT
        inputs = list(inputs) + [""] * (index + 1 - len(inputs))
        inputs[index] = name
        return inputs

    def _matmul_bias_adds(self) -> None:
        """MatMul -> Add(constant): the FULLY_CONNECTED's (corrected) bias goes into the Add's
        constant. Lowered as one op (the Add has none of its own), that bias includes the Add's
        constant and replaces it; else it is the correction alone (a zero bias the TFLite
        quantizer added to correct) and is added to it."""
        for node in self.graph.node:
            layer = self.source.layers.get(node.name)
            users = self.consumers.get(node.output[0], [])
            if node.op_type != "MatMul" or layer is None or layer.bias is None or len(users) != 1:
                continue
            add = users[0]
            consts = [i for i, n in enumerate(add.input) if n in self.inits]
            if add.op_type != "Add" or len(consts) != 1:
                continue
            old = numpy_helper.to_array(self.inits[add.input[consts[0]]])
            if old.size != layer.bias.size or old.shape[-1] != old.size:
                continue
            bias = layer.bias.reshape(old.shape) + (old if add.name in self.source.nodes else 0.0)
            name = self._const(f"{add.name or add.output[0]}_bias", bias.astype(np.float32))
            self.inits[name], self.types[name] = self.new_inits[-1], FLOAT
            add.input[consts[0]] = name

    def _int32_bias_ok(self, node, inputs: list) -> bool:
        bias = inputs[ops.BIAS_INPUT[node.op_type]]
        if not (self.profile.int32_bias and bias in self.inits and node.input[0] in self.act):
            return False
        if (node.input[1], ops.WEIGHT_AXIS[node.op_type][1](node)) not in self.weight_cache:
            return False
        if node.op_type == "Gemm" and not _unit_gemm(node):
            return False          # bias scale would need alpha/beta folded in
        return numpy_helper.to_array(self.inits[bias]).ndim == 1

    def _bias(self, node, inputs: list) -> tuple[str, list]:
        bias = inputs[ops.BIAS_INPUT[node.op_type]]
        b = numpy_helper.to_array(self.inits[bias])
        _, wp = self.weight_cache[(node.input[1], ops.WEIGHT_AXIS[node.op_type][1](node))]
        w_scale = np.asarray(wp.scale, np.float32).reshape(-1)
        if w_scale.size not in (1, b.size):
            w_scale = np.tile(w_scale, b.size // w_scale.size)    # grouped ConvTranspose
        q, p = params.bias(b, float(self.act[node.input[0]].scale), w_scale)
        return self._dq_const(bias, q, p)


def _drop_dead_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers no node (nor If/Loop body) reads and no graph output names: the float
    weights the Q/DQ weights replaced."""
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    used |= {name for sub in descendants(graph) for node in sub.node for name in node.input}
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)


def _unit_gemm(node) -> bool:
    attrs = {a.name: a.f for a in node.attribute if a.name in ("alpha", "beta")}
    return attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
