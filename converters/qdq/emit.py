"""The float ONNX graph the QDQ writer quantizes, written from the converter's IR.

One compiler, two writers: the QDQ model is made from the graph the TFLite writer lowers, not
from a second clean-up of the ONNX file. ``ir_graph`` runs the frontend (``frontend.to_graph``:
folded to a fixed point, opset quirks normalized) and the target-neutral passes of
``passes.PIPELINE`` (``SHARED_PASSES``: Einsum decomposed, constants folded, Identity/Dropout
dropped, BatchNormalization folded into Conv/Gemm weights, exact GELU recognized); ``emit``
writes each IR node back as an ONNX node at opset ``max(model opset, 13)`` (per-channel
DequantizeLinear needs 13). The TFLite-only passes are left out: ``fuse_activation`` sets
TFLite's ``fused_activation_function`` (ONNX Runtime and TensorRT fuse Conv+Relu themselves,
``ops.FUSED_ACTIVATION``) and ``convert_layout`` moves to NHWC.

The IR keeps the ONNX op set, with attribute defaults filled and the inputs ONNX moved between
attributes and tensors normalized to attributes (``frontend/quirks.py``). ``WRITERS`` turns the
normalized forms back into the inputs the target opset takes (one function per op, a comment on
the opset that moved each); every other attribute is written when the op's schema at the target
opset has it (which also drops IR-private ``_...`` attributes). ``Gelu`` is an ONNX op only
from opset 20: below it, the erf form is written (https://onnx.ai/onnx/operators/onnx__Gelu.html).

A node the frontend could not normalize (``_unresolved``: a data-dependent detector tail) keeps
its own inputs. An If/Loop/Scan left in the IR (control on data) is written with its bodies as
the model has them (float: the QDQ writer quantizes the outer graph); the outer names they read
are kept alive and unrenamed through the passes (``ir_graph``) and never shadowed (``_Emitter``).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.frontend import to_graph
from converters.frontend.subgraphs import descendants, local_names
from converters.ir import Graph, Node
from converters.passes import PIPELINE, convert_layout, fuse_activation

MIN_OPSET = 13
GELU_OPSET = 20
LAYER_NORM_OPSET = 17
# TFLite-specific: fused activations are a TFLite op field, NHWC is TFLite's layout
TFLITE_ONLY = (fuse_activation, convert_layout)
SHARED_PASSES = tuple(p for p in PIPELINE if p not in TFLITE_ONLY)
INT64_FAR = -(2 ** 62)        # a Slice end "before index 0" for negative steps (ONNX clamps it to -1)


def ir_graph(model: onnx.ModelProto) -> Graph:
    """The IR of ``model`` after the passes both targets share. Names that an If/Loop body reads
    from the graph around it are held as graph outputs while the IR is built and the passes run,
    so no pass drops or renames them (the IR sees a subgraph as one attribute, not its reads)."""
    reads = outer_reads(model.graph)
    if reads:
        model = _with_outputs(model, reads)
    graph = to_graph(model)
    for p in SHARED_PASSES:
        p.run(graph)
    graph.outputs = graph.outputs[:len(graph.outputs) - len(reads)]
    return graph


def outer_reads(graph: onnx.GraphProto) -> list[str]:
    """Names the subgraphs of ``graph``'s nodes read from ``graph`` (its inputs, initializers,
    node outputs), in a stable order."""
    own = set(local_names(graph))
    found = {name for sub in descendants(graph) for node in sub.node for name in node.input}
    return sorted(found & own - {o.name for o in graph.output})


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    types = {vi.name: vi.type for vi in [*model.graph.value_info, *model.graph.input]}
    types.update({i.name: onnx.TypeProto(tensor_type=onnx.TypeProto.Tensor(elem_type=i.data_type))
                  for i in model.graph.initializer})
    for name in names:
        vi = copy.graph.output.add()
        vi.name = name
        if name in types:
            vi.type.CopyFrom(types[name])
    return copy


def fused_activations(graph: Graph) -> dict[str, list[str]]:
    """{IR node: the Relu/Clip the TFLite build fuses into it} (``fuse_activation``, run on a
    copy of the node list: the QDQ graph keeps both nodes, ``--keep-float`` treats them as one)."""
    nodes = [Node(n.op, n.name, list(n.inputs), list(n.outputs), {**n.attrs, "_absorbed": []}, n.domain)
             for n in graph.nodes]
    copy = Graph(nodes, dict(graph.tensors), list(graph.inputs), list(graph.outputs), graph.opset, graph.name)
    fuse_activation.run(copy)
    return {n.name: n.attrs["_absorbed"] for n in copy.nodes if n.attrs["_absorbed"]}


def subgraphs(graph: Graph) -> list[onnx.GraphProto]:
    """The bodies of the If/Loop/Scan nodes left in ``graph`` (control on data) and theirs."""
    found = []
    for n in graph.nodes:
        for value in n.attrs.values():
            for body in value if isinstance(value, list) else [value]:
                if isinstance(body, onnx.GraphProto):
                    found += [body, *descendants(body)]
    return found


def emit(graph: Graph, like: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """(the float ONNX model of ``graph``, {written node name: the IR node it came from}).
    ``like`` (the source model) gives the other domains' opsets, output types and metadata."""
    return _Emitter(graph, like).model()


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_<k>`` with the first k that is not ``taken``; added to ``taken``."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


class _Emitter:
    def __init__(self, graph: Graph, like: onnx.ModelProto):
        self.graph, self.like = graph, like
        self.opset = max(graph.opset, MIN_OPSET)
        bodies = subgraphs(graph)
        # a new name must not be one a body defines: ONNX forbids shadowing an outer name
        self.names = set(graph.tensors) | {n.name for n in graph.nodes} | {x for b in bodies for x in local_names(b)}
        self.body_reads = [name for b in bodies for node in b.node for name in node.input]
        self.inits: dict[str, onnx.TensorProto] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.origin: dict[str, str] = {}

    def model(self) -> tuple[onnx.ModelProto, dict[str, str]]:
        for node in self.graph.nodes:
            key = f"{node.domain}::{node.op}" if node.domain else node.op
            writer = WRITERS.get(key) if "_unresolved" not in node.attrs else None
            before = len(self.nodes)
            if writer is None:
                self.add(node.op, list(node.inputs), node.outputs, node.name, self.attributes(node), node.domain)
            else:
                writer(self, node)
            for proto in self.nodes[before:]:
                self.origin[proto.name] = node.name
        for name in [i for n in self.nodes for i in n.input] + list(self.graph.outputs) + self.body_reads:
            value = self.graph.const(name)
            if value is not None and name not in self.inits:
                self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        g = helper.make_graph(self.nodes, self.graph.name, [self.value_info(n) for n in self.graph.inputs],
                              [self.output_info(n) for n in self.graph.outputs], list(self.inits.values()),
                              value_info=self.value_infos())
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [o for o in self.like.opset_import if o.domain not in ("", "ai.onnx")]
        model = helper.make_model(g, opset_imports=opsets, ir_version=max(self.like.ir_version, 7),
                                  producer_name=self.like.producer_name or "ganglion")
        helper.set_model_props(model, {p.key: p.value for p in self.like.metadata_props})
        return model, self.origin

    # --- pieces -------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        return unique_name(base, self.names)

    def const(self, base: str, value) -> str:
        name = self.unique(base)
        self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def add(self, op, inputs, outputs, name, attrs=None, domain="") -> None:
        node = helper.make_node(op, inputs, outputs, name=name, domain=domain or None)
        node.attribute.extend(attrs or [])
        self.nodes.append(node)

    def attributes(self, node: Node, drop=()) -> list[onnx.AttributeProto]:
        """``node``'s attributes that its schema at the target opset has (all public ones for an
        op without a schema), typed by that schema."""
        try:
            schema = onnx.defs.get_schema(node.op, self.opset, node.domain or "").attributes
        except Exception:  # an op of another domain onnx does not know: write what the IR has
            schema = None
        out = []
        for key, value in node.attrs.items():
            if key.startswith("_") or key in drop or value is None or (schema is not None and key not in schema):
                continue
            if isinstance(value, np.ndarray):
                value = numpy_helper.from_array(value)
            kind = schema[key].type if schema is not None else None
            out.append(helper.make_attribute(key, value, attr_type=kind) if kind else helper.make_attribute(key, value))
        return out

    def value_info(self, name: str) -> onnx.ValueInfoProto:
        t = self.graph.tensors[name]
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
        return helper.make_tensor_value_info(name, elem, list(t.shape) if t.shape is not None else None)

    def output_info(self, name: str) -> onnx.ValueInfoProto:
        t = self.graph.tensors.get(name)
        if t is not None and t.dtype is not None and t.shape is not None:
            return self.value_info(name)
        found = next((o for o in self.like.graph.output if o.name == name), None)
        return found if found is not None else self.value_info(name)

    def value_infos(self) -> list[onnx.ValueInfoProto]:
        io = set(self.graph.inputs) | set(self.graph.outputs)
        return [self.value_info(o) for n in self.nodes for o in n.output
                if o and o not in io and o in self.graph.tensors and self.graph.tensors[o].dtype is not None
                and not self.graph.tensors[o].is_const]


# --- writers of the normalized forms (frontend/quirks.py), one per op --------------------------------
WRITERS = {}


def writes(*ops):
    def register(fn):
        for op in ops:
            WRITERS[op] = fn
        return fn
    return register


def _ints(values) -> np.ndarray:
    return np.asarray([int(v) for v in values], np.int64)


def _like(e: _Emitter, node: Node, value: float) -> np.ndarray:
    return np.asarray(value, e.graph.tensors[node.inputs[0]].dtype)


@writes("Clip")
def _clip(e: _Emitter, node: Node) -> None:
    # min/max are inputs since opset 11; an infinite bound is an omitted input
    bounds = [e.const(f"{node.name}_{k}", _like(e, node, node.attrs[k])) if math.isfinite(node.attrs[k]) else ""
              for k in ("min", "max")]
    while bounds and not bounds[-1]:
        bounds.pop()
    e.add("Clip", [node.inputs[0], *bounds], node.outputs, node.name)


@writes("Squeeze", "Unsqueeze")
def _squeeze(e: _Emitter, node: Node) -> None:
    # axes is an input since opset 13
    axes = e.const(f"{node.name}_axes", _ints(node.attrs["axes"]))
    e.add(node.op, [node.inputs[0], axes], node.outputs, node.name)


@writes("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceSumSquare", "ReduceL2", "ReduceL1")
def _reduce(e: _Emitter, node: Node) -> None:
    # axes is an input of ReduceSum since opset 13, of the others since 18
    if node.op == "ReduceSum" or e.opset >= 18:
        axes = e.const(f"{node.name}_axes", _ints(node.attrs["axes"]))
        e.add(node.op, [node.inputs[0], axes], node.outputs, node.name, e.attributes(node, drop=("axes",)))
    else:
        e.add(node.op, node.inputs[:1], node.outputs, node.name, e.attributes(node))


@writes("Split")
def _split(e: _Emitter, node: Node) -> None:
    # split sizes are an input since opset 13
    sizes = e.const(f"{node.name}_split", _ints(node.attrs["split"]))
    e.add("Split", [node.inputs[0], sizes], node.outputs, node.name, e.attributes(node, drop=("split", "num_outputs")))


@writes("Pad")
def _pad(e: _Emitter, node: Node) -> None:
    # pads and the constant value are inputs since opset 11; the IR holds pads for every axis
    pads = e.const(f"{node.name}_pads", _ints(node.attrs["pads"]))
    inputs = [node.inputs[0], pads]
    if node.attrs.get("mode", "constant") == "constant":
        inputs.append(e.const(f"{node.name}_value", _like(e, node, node.attrs.get("value", 0.0))))
    e.add("Pad", inputs, node.outputs, node.name, e.attributes(node, drop=("pads", "value")))


@writes("Slice")
def _slice(e: _Emitter, node: Node) -> None:
    # the IR holds Python-resolved begin/end/step on every axis; an end of -1 with a negative step
    # means "through index 0", which ONNX spells as any end below -dim
    ends = [INT64_FAR if s < 0 and x < 0 else x for x, s in zip(node.attrs["end"], node.attrs["step"])]
    parts = [node.attrs["begin"], ends, range(len(ends)), node.attrs["step"]]
    inputs = [e.const(f"{node.name}_{k}", _ints(v)) for k, v in zip(("starts", "ends", "axes", "steps"), parts)]
    e.add("Slice", [node.inputs[0], *inputs], node.outputs, node.name)


@writes("Reshape")
def _reshape(e: _Emitter, node: Node) -> None:
    # the IR's Reshape has no shape input: its output shape is static
    shape = e.const(f"{node.name}_shape", _ints(e.graph.tensors[node.outputs[0]].shape))
    e.add("Reshape", [node.inputs[0], shape], node.outputs, node.name)


@writes("Resize")
def _resize(e: _Emitter, node: Node) -> None:
    # roi, scales, sizes are inputs; the IR kept the scales the model gave (``_scales``), else the
    # output shape is static: the sizes
    if "_scales" in node.attrs:
        extra = ["", e.const(f"{node.name}_scales", np.asarray(node.attrs["_scales"], np.float32))]
    else:
        extra = ["", "", e.const(f"{node.name}_sizes", _ints(e.graph.tensors[node.outputs[0]].shape))]
    e.add("Resize", [node.inputs[0], *extra], node.outputs, node.name, e.attributes(node, drop=("axes",)))


@writes("ConvTranspose")
def _conv_transpose(e: _Emitter, node: Node) -> None:
    # the frontend resolved output_shape/auto_pad into explicit pads and output_padding
    e.add(node.op, node.inputs, node.outputs, node.name, e.attributes(node, drop=("output_shape",)))


@writes("Gelu")
def _gelu(e: _Emitter, node: Node) -> None:
    if e.opset >= GELU_OPSET:
        e.add("Gelu", node.inputs, node.outputs, node.name, e.attributes(node))
        return
    # before opset 20: x * 0.5 * (1 + erf(x / sqrt 2)), the form fuse_gelu recognized
    x, dtype = node.inputs[0], e.graph.tensors[node.inputs[0]].dtype
    mid = [e.unique(f"{node.name}/{k}") for k in ("scaled", "erf", "plus1", "times_x")]
    steps = [("Div", [x, e.const(f"{node.name}/sqrt2", np.asarray(math.sqrt(2.0), dtype))], mid[0]),
             ("Erf", [mid[0]], mid[1]),
             ("Add", [mid[1], e.const(f"{node.name}/one", np.asarray(1.0, dtype))], mid[2]),
             ("Mul", [x, mid[2]], mid[3]),
             ("Mul", [mid[3], e.const(f"{node.name}/half", np.asarray(0.5, dtype))], node.outputs[0])]
    for op, inputs, out in steps:
        e.add(op, inputs, [out], e.unique(f"{node.name}/{op}"))


@writes("ganglion::Normalize")
def _normalize(e: _Emitter, node: Node) -> None:
    """``passes/fuse_normalization``'s node: LayerNormalization (unit scale) where the opset has it
    and the axes are trailing, else the centered form ``d / sqrt(mean(d * d) + eps)``,
    ``d = x - mean(x)`` (or ``x`` without ``center``), which is exact in float."""
    x, dtype = node.inputs[0], e.graph.tensors[node.inputs[0]].dtype
    shape, axes = e.graph.tensors[x].shape, [int(a) for a in node.attrs["axes"]]
    eps = float(node.attrs["epsilon"])
    trailing = axes == list(range(axes[0], len(shape)))
    if node.attrs["center"] and trailing and e.opset >= LAYER_NORM_OPSET:
        ones = e.const(f"{node.name}/scale", np.ones(shape[axes[0]:], dtype))
        e.add("LayerNormalization", [x, ones], node.outputs, node.name,
              [helper.make_attribute("axis", axes[0]), helper.make_attribute("epsilon", eps)])
        return
    if node.attrs.get("l2"):
        _l2_normalize(e, node, x, axes, eps)
        return
    mid = {k: e.unique(f"{node.name}/{k}") for k in ("mean", "centered", "square", "var", "var_eps", "std")}
    d = x
    if node.attrs["center"]:
        _reduce(e, Node("ReduceMean", e.unique(f"{node.name}/ReduceMean"), [x], [mid["mean"]],
                        {"axes": axes, "keepdims": 1}))
        e.add("Sub", [x, mid["mean"]], [mid["centered"]], e.unique(f"{node.name}/Sub"))
        d = mid["centered"]
    e.add("Mul", [d, d], [mid["square"]], e.unique(f"{node.name}/Mul"))
    _reduce(e, Node("ReduceMean", e.unique(f"{node.name}/ReduceMean"), [mid["square"]], [mid["var"]],
                    {"axes": axes, "keepdims": 1}))
    e.add("Add", [mid["var"], e.const(f"{node.name}/epsilon", np.asarray(eps, dtype))], [mid["var_eps"]],
          e.unique(f"{node.name}/Add"))
    e.add("Sqrt", [mid["var_eps"]], [mid["std"]], e.unique(f"{node.name}/Sqrt"))
    e.add("Div", [d, mid["std"]], node.outputs, e.unique(f"{node.name}/Div"))


def _l2_normalize(e: _Emitter, node: Node, x: str, axes: list[int], eps: float) -> None:
    """x / max(ReduceL2(x), eps): the form F.normalize exports."""
    norm, floor = e.unique(f"{node.name}/norm"), e.unique(f"{node.name}/floor")
    _reduce(e, Node("ReduceL2", e.unique(f"{node.name}/ReduceL2"), [x], [norm], {"axes": axes, "keepdims": 1}))
    dtype = e.graph.tensors[x].dtype
    e.add("Max", [norm, e.const(f"{node.name}/epsilon", np.asarray(eps, dtype))], [floor], e.unique(f"{node.name}/Max"))
    e.add("Div", [x, floor], node.outputs, e.unique(f"{node.name}/Div"))
