"""Write an int8 QDQ ONNX model from a float ONNX model and calibration ranges.

The float graph is kept as it is; quantization is expressed with ONNX QuantizeLinear /
DequantizeLinear (opset >= 13, for per-channel scales):

    activation x read by a quantized op:  x -> QuantizeLinear -> DequantizeLinear -> op
    weight W of Conv/Gemm/MatMul:         DequantizeLinear(int8 initializer, per-channel scale) -> op
    bias B:                               DequantizeLinear(int32 initializer, in_scale * w_scale)
                                          (profile "onnxruntime") or left float (profile "tensorrt")

This is the explicit-quantization form TensorRT builds int8 engines from (its non-deprecated
path) and the form ONNX Runtime fuses into QLinearConv / QGemm / int8 pooling kernels.
Graph outputs stay float (the last op dequantizes), so the model keeps its ONNX signature.

Profiles (``PROFILES``):
    tensorrt     symmetric activations (zero point 0: TensorRT supports no other), float bias
                 (TensorRT folds the bias in float; it parses no int32 DequantizeLinear)
    onnxruntime  asymmetric uint8 activations, int8 weights, int32 bias: ORT's CPU kernels are
                 U8S8 (int8 activations leave residual Adds and their Convs in float), an
                 asymmetric range gives one-sided tensors such as ReLU outputs all 256 levels,
                 and ORT folds Relu/Clip into the Q when the zero point is the range floor
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from converters.errors import ConvertError
from converters.frontend.names import check_keep_float, name_nodes
from converters.qdq import correct, fold, ops, params
from core.errors import UsageError

FLOAT = onnx.TensorProto.FLOAT
MIN_OPSET = 13      # per-channel DequantizeLinear (axis attribute) needs opset 13


@dataclass(frozen=True)
class Profile:
    symmetric_activations: bool
    activation_dtype: str
    int32_bias: bool


PROFILES = {
    "tensorrt": Profile(symmetric_activations=True, activation_dtype="int8", int32_bias=False),
    "onnxruntime": Profile(symmetric_activations=False, activation_dtype="uint8", int32_bias=True),
}


def build(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], *,
          keep_float=(), profile: str = "tensorrt", samples: list[dict] | None = None,
          weight_scales: dict | None = None) -> onnx.ModelProto:
    """An int8 QDQ copy of ``model``; nodes named in ``keep_float`` stay float.

    With ``samples`` (the calibration feeds) the biases of quantized Conv/Gemm nodes are corrected
    for the mean shift their weights' rounding causes (``correct.py``). ``weight_scales``
    (initializer -> ``carried.WeightGrid``): an already-quantized model's weights keep their own
    int8 values and scales."""
    if profile not in PROFILES:
        raise UsageError(f"unknown QDQ profile {profile!r}", hint=f"choose one of {sorted(PROFILES)}")
    keep = check_keep_float(model, keep_float)
    model, folded = _prepared(model)
    # keeping a BatchNormalization float means keeping the Conv it was folded into float
    keep = keep | {conv for bn, conv in folded.items() if bn in keep}
    if samples:
        _correct_biases(model, samples, keep)
    writer = _Writer(model.graph, _propagate_same_scale(model.graph, ranges, keep), PROFILES[profile], keep)
    writer.carried = dict(weight_scales or {})
    writer.rewrite()
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "ganglion.qdq.profile": profile})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConvertError(f"the QDQ model failed the ONNX checker: {exc}", code="convert.qdq",
                           hint="this is a converter bug; keep the failing node float with --keep-float") from exc
    return model


def _correct_biases(model: onnx.ModelProto, samples: list[dict], keep: frozenset) -> None:
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.name not in keep and correct.correctable(n, inits)]
    correct.apply(model.graph, correct.input_means(model, samples, nodes), nodes)


def _prepared(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy with every node named, opset >= 13, BatchNormalization folded, and inferred value types."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # every node by the name --keep-float takes (unnamed or repeated names too: frontend/names.py)
    name_nodes(copy.graph)
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset < MIN_OPSET:
        try:
            copy = version_converter.convert_version(copy, MIN_OPSET)
        except Exception as exc:  # the converter raises assorted internal errors
            raise ConvertError(f"cannot raise opset {opset} to {MIN_OPSET} for QDQ: {exc}",
                               code="convert.qdq", hint="export the model with opset >= 13") from exc
    folded = fold.fold(copy.graph)
    del copy.graph.value_info[:]          # re-inferred below for the folded graph
    return onnx.shape_inference.infer_shapes(copy), folded


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

    def __init__(self, graph, ranges: dict, profile: Profile, keep: frozenset):
        self.graph, self.ranges, self.profile, self.keep = graph, ranges, profile, keep
        self.inits = {i.name: i for i in graph.initializer}
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
        self.types.update({i.name: i.data_type for i in graph.initializer})
        self.names = {n for node in graph.node for n in list(node.input) + list(node.output)}
        self.names |= set(self.inits) | {vi.name for vi in graph.input}
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
    def quantized(self, node) -> bool:
        return node.op_type in ops.ACTIVATION_INPUTS and node.name not in self.keep

    def _plan_activations(self) -> dict[str, params.QuantParams]:
        act = {}
        for node in self.graph.node:
            if not self.quantized(node):
                continue
            for i in ops.activation_inputs(node):
                name = node.input[i] if i < len(node.input) else ""
                if (name and name not in self.inits and self.types.get(name) == FLOAT
                        and name in self.ranges and not self._fused_away(name)):
                    lo, hi = self.ranges[name]
                    act[name] = params.activation(lo, hi, symmetric=self.profile.symmetric_activations,
                                                  dtype=self.profile.activation_dtype)
        return act

    def _fused_away(self, name: str) -> bool:
        """Conv -> Relu: no Q/DQ on the tensor between them (the activation is fused)."""
        producer = self.producer.get(name)
        users = self.consumers.get(name, [])
        return (producer is not None and producer.op_type in ops.FUSING_PRODUCERS
                and self.quantized(producer) and name not in self.outputs and len(users) == 1
                and users[0].op_type in ops.FUSED_ACTIVATION and self.quantized(users[0]))

    # --- rewriting --------------------------------------------------------------------------
    def rewrite(self) -> None:
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
        fold.drop_dead_initializers(self.graph)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

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
        data = set(ops.activation_inputs(node))
        weight_axes = ops.WEIGHT_AXIS.get(node.op_type, {})
        local: dict[str, str] = {}
        for i, name in enumerate(inputs):
            if name in self.act and i in data:
                if name not in local:
                    local[name], extra = self._dq(name)
                    before.extend(extra)
                inputs[i] = local[name]
            elif name in self.inits and self.types.get(name) == FLOAT and (i in data or i in weight_axes):
                axis = weight_axes[i](node) if i in weight_axes else None
                inputs[i], extra = self._weight(name, axis)
                before.extend(extra)
        bias_i = ops.BIAS_INPUT.get(node.op_type)
        if bias_i is not None and bias_i < len(inputs) and self._int32_bias_ok(node, inputs):
            inputs[bias_i], extra = self._bias(node, inputs)
            before.extend(extra)
        rewired = onnx.NodeProto()
        rewired.CopyFrom(node)
        del rewired.input[:]
        rewired.input.extend(inputs)
        return before + [rewired]

    def _weight(self, name: str, axis: int | None) -> tuple[str, list]:
        array = numpy_helper.to_array(self.inits[name])
        if axis is not None and array.ndim < 2:
            axis = None
        if axis == -1 and array.ndim != 2:
            axis = None          # batched MatMul weights: one scale for all
        key = (name, axis)
        if key in self.weight_cache:          # a shared weight is dequantized once
            return self.weight_cache[key][0], []
        # fold.py names a weight with a BatchNormalization folded in "<weight>_bn_folded"
        grid = self.carried.get(name) or self.carried.get(name.removesuffix("_bn_folded"))
        kept = params.carried_weight(array, axis, grid, name) if grid is not None else None
        q, p = kept or params.weight(array, axis)
        out, nodes = self._dq_const(name, q, p)
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

    def _int32_bias_ok(self, node, inputs: list) -> bool:
        bias = node.input[ops.BIAS_INPUT[node.op_type]]
        if not (self.profile.int32_bias and bias in self.inits and node.input[0] in self.act):
            return False
        if (node.input[1], ops.WEIGHT_AXIS[node.op_type][1](node)) not in self.weight_cache:
            return False
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("alpha", helper.make_attribute("alpha", 1.0)).f != 1.0 or \
               attrs.get("beta", helper.make_attribute("beta", 1.0)).f != 1.0:
                return False      # bias scale would need alpha/beta folded in
        return numpy_helper.to_array(self.inits[bias]).ndim == 1

    def _bias(self, node, inputs: list) -> tuple[str, list]:
        bias = node.input[ops.BIAS_INPUT[node.op_type]]
        b = numpy_helper.to_array(self.inits[bias])
        _, wp = self.weight_cache[(node.input[1], ops.WEIGHT_AXIS[node.op_type][1](node))]
        w_scale = np.asarray(wp.scale, np.float32).reshape(-1)
        if w_scale.size not in (1, b.size):
            w_scale = np.tile(w_scale, b.size // w_scale.size)    # grouped ConvTranspose
        q, p = params.bias(b, float(self.act[node.input[0]].scale), w_scale)
        return self._dq_const(bias, q, p)
