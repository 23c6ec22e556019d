"""Decide the memory layout of every tensor: channels-last where it pays, once, propagated.

ONNX is channels-first (NCHW); TFLite's spatial kernels are channels-last (NHWC). This pass gives
each tensor a ``perm`` (stored value = ``onnx_value.transpose(perm)``) in one forward sweep:

* spatial ops (Conv, pools, Resize, ...) demand channels-last input and produce channels-last;
* elementwise ops adopt their first activation input's layout; constants are re-laid out for free;
* axis ops (Concat, Softmax, Reduce*, Split, Slice, Pad, Transpose) keep the layout and the
  lowering remaps their axes; a Transpose that only undoes the layout becomes a no-op;
* Reshape-like ops accept a permuted input when the permutation only moves size-1 dims (the bytes
  are identical, e.g. [N,1,1,C] after global pooling), or when a Flatten's result only feeds
  constant-weight Gemm/MatMul (their weight rows are permuted instead: LeNet/VGG heads);
  everything else wants ONNX layout.

Where a demand differs from what a tensor holds, one ``LayoutTranspose`` node (domain "ganglion",
attrs perm = permutation of the *stored* value) is inserted and shared by all consumers. So a
plain CNN gets transposes only at its inputs and outputs, and none with ``io_layout="nhwc"``.
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node, Tensor

SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
           "Resize", "DepthToSpace", "SpaceToDepth", "InstanceNormalization", "LRN"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Relu", "Clip", "LeakyRelu", "PRelu",
               "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Erf", "Gelu", "Sqrt", "Exp", "Log",
               "Abs", "Neg", "Identity", "Dropout", "Reciprocal", "Elu", "Softplus", "Floor", "Ceil",
               "Cast", "Sum"}
KEEP_LAYOUT = {"Concat", "Split", "Slice", "Pad"}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceSumSquare", "ReduceL2",
          "ReduceL1"}
RESHAPE_LIKE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
LAYOUT_OP, LAYOUT_DOMAIN = "LayoutTranspose", "ganglion"


def channels_last(rank: int) -> tuple[int, ...] | None:
    return (0, *range(2, rank), 1) if rank >= 3 else None


def _norm(perm):
    """None for the identity permutation, else a tuple."""
    if perm is None or list(perm) == list(range(len(perm))):
        return None
    return tuple(perm)


class _Sweep:
    def __init__(self, graph: Graph):
        self.g = graph
        self.out_nodes: list[Node] = []
        self.cache: dict[tuple[str, tuple | None], str] = {}
        self.consumers = graph.consumers()
        self.changed = False

    def perm(self, name: str):
        return self.g.tensors[name].perm

    def want(self, node: Node, index: int, perm) -> None:
        """Make input ``index`` of ``node`` hold layout ``perm`` (inserting a transpose if needed)."""
        name = node.inputs[index]
        perm = _norm(perm)
        t = self.g.tensors[name]
        if t.is_const:
            node.inputs[index] = self.const_as(name, perm)
            return
        if t.perm == perm:
            return
        key = (name, perm)
        if key not in self.cache:
            rank = len(t.shape)
            cur = t.perm or tuple(range(rank))
            des = perm or tuple(range(rank))
            new = self.g.fresh(name + ("_nhwc" if perm else "_nchw"))
            self.g.tensors[new] = Tensor(new, t.shape, t.dtype, perm=perm)
            self.out_nodes.append(Node(LAYOUT_OP, self.g.fresh("transpose_" + name), [name], [new],
                                       {"perm": [cur.index(d) for d in des]}, LAYOUT_DOMAIN))
            self.cache[key] = new
            self.changed = True
        node.inputs[index] = self.cache[key]

    def const_as(self, name: str, perm) -> str:
        """A constant laid out as ``perm`` (rank-expanded first, as numpy broadcasting would)."""
        t = self.g.tensors[name]
        if perm is None or t.data.size == 1:
            return name
        key = (name, perm)
        if key not in self.cache:
            value = t.data.reshape((1,) * (len(perm) - t.data.ndim) + t.data.shape)
            new = self.g.add_const(name + "_nhwc", value)
            self.g.tensors[new].perm = perm
            self.cache[key] = new
        return self.cache[key]

    def all_in(self, node: Node, perm) -> None:
        """Every input of ``node`` and its outputs in layout ``perm``."""
        for i, name in enumerate(node.inputs):
            if name:
                self.want(node, i, perm)
        self.set_out(node, perm)

    def set_out(self, node: Node, perm) -> None:
        for o in node.outputs:
            if o:
                self.g.tensors[o].perm = _norm(perm)


def run(graph: Graph) -> bool:
    sweep = _Sweep(graph)
    for name in graph.inputs:
        t = graph.tensors[name]
        if graph.io_layout == "nhwc" and t.shape is not None and len(t.shape) == 4:
            t.perm = channels_last(4)
    for node in graph.nodes:
        inserted = (node.domain, node.op) == (LAYOUT_DOMAIN, LAYOUT_OP)
        if inserted or any(graph.tensors[i].shape is None for i in node.inputs if i):
            sweep.out_nodes.append(node)
            continue
        RULES.get(node.op, _onnx_layout)(sweep, node)
        sweep.out_nodes.append(node)
    graph.nodes = sweep.out_nodes
    _fix_outputs(graph)
    return sweep.changed


def _onnx_layout(s: _Sweep, node: Node) -> None:
    s.all_in(node, None)


def _spatial(s: _Sweep, node: Node) -> None:
    rank = len(s.g.tensors[node.inputs[0]].shape)
    s.want(node, 0, channels_last(rank))
    s.set_out(node, channels_last(rank))


def _elementwise(s: _Sweep, node: Node) -> None:
    out_rank = len(s.g.tensors[node.outputs[0]].shape)
    acts = [i for i, n in enumerate(node.inputs) if n and not s.g.tensors[n].is_const]
    full = [i for i in acts if len(s.g.tensors[node.inputs[i]].shape) == out_rank]
    target = next((s.perm(node.inputs[i]) for i in full if s.perm(node.inputs[i])), None)
    if len(full) != len(acts):  # a lower-rank activation broadcasts by trailing dims: keep ONNX
        target = None
    s.all_in(node, target)


def _keep_layout(s: _Sweep, node: Node) -> None:
    target = s.perm(node.inputs[0])
    s.all_in(node, target)


def _softmax(s: _Sweep, node: Node) -> None:
    # TFLite SOFTMAX works on the innermost axis: keep a layout that stores ``axis`` last.
    rank, axis = len(s.g.tensors[node.inputs[0]].shape), node.attrs["axis"]
    cur = s.perm(node.inputs[0]) or tuple(range(rank))
    if cur[-1] != axis:
        cur = tuple(i for i in range(rank) if i != axis) + (axis,)
    s.want(node, 0, cur)
    s.set_out(node, cur)


def _reduce(s: _Sweep, node: Node) -> None:
    cur = s.perm(node.inputs[0])
    if cur is None or node.attrs.get("keepdims", 1):
        s.set_out(node, cur)
        return
    axes = set(node.attrs["axes"])
    s.set_out(node, [c - sum(a < c for a in axes) for c in cur if c not in axes])


def _transpose(s: _Sweep, node: Node) -> None:
    rank = len(s.g.tensors[node.inputs[0]].shape)
    cur = s.perm(node.inputs[0]) or tuple(range(rank))
    t = node.attrs["perm"]
    # Choose the output layout that makes the stored data unchanged: the op becomes a no-op.
    s.set_out(node, [t.index(c) for c in cur])


def _reshape_like(s: _Sweep, node: Node) -> None:
    t = s.g.tensors[node.inputs[0]]
    if t.perm is not None:
        moved = [p for p in t.perm if t.shape[p] != 1]
        if moved != sorted(moved) and not _flatten_into_weights(s, node):
            s.want(node, 0, None)
    s.set_out(node, None)


def _flatten_into_weights(s: _Sweep, node: Node) -> bool:
    """Flatten [N, C, H, W] -> [N, C*H*W] feeding only matrix products with a constant weight:
    flatten the channels-last bytes as they are and permute the weight's rows instead, so no
    TRANSPOSE runs (LeNet/VGG-style heads). The flattened tensor then no longer holds the ONNX
    value, so it is renamed out of the ONNX namespace (tensor_map will not list it)."""
    g, x, y = s.g, s.g.tensors[node.inputs[0]], node.outputs[0]
    out_shape = g.tensors[y].shape
    if (x.perm[0] != 0 or len(out_shape) != 2 or out_shape[0] != x.shape[0] or y in g.outputs):
        return False
    users = s.consumers.get(y, [])
    if not users or not all(_takes_flat_input(g, u, y) for u in users):
        return False
    # stored row k holds ONNX row order[k]
    order = np.arange(out_shape[1]).reshape(x.shape[1:]).transpose([p - 1 for p in x.perm[1:]]).reshape(-1)
    for u in users:
        w = g.const(u.inputs[1])
        axis = 0 if not (u.op == "Gemm" and u.attrs.get("transB", 0)) else 1
        # A broadcast view (a folded ConstantOfShape splat) repeats one row: permuting is the identity,
        # and w[order] would lay out all of it (411 MB for VGG-19's fc6, issue 8).
        permuted = w if w.strides[axis] == 0 else np.take(w, order, axis=axis)
        u.inputs[1] = g.add_const(u.inputs[1] + "_nhwc_rows", permuted)
    renamed = g.fresh(y + "_nhwc_flat")
    g.tensors[renamed] = Tensor(renamed, g.tensors[y].shape, g.tensors[y].dtype)
    node.outputs = [renamed]
    for u in users:
        u.inputs = [renamed if i == y else i for i in u.inputs]
    return True


def _takes_flat_input(g: Graph, user: Node, name: str) -> bool:
    if user.op not in ("Gemm", "MatMul") or user.inputs[0] != name or user.inputs[1] == name:
        return False
    w = g.const(user.inputs[1])
    return w is not None and w.ndim == 2 and not user.attrs.get("transA", 0)


RULES = {**{op: _spatial for op in SPATIAL}, **{op: _elementwise for op in ELEMENTWISE},
         **{op: _keep_layout for op in KEEP_LAYOUT}, **{op: _reduce for op in REDUCE},
         **{op: _reshape_like for op in RESHAPE_LIKE},
         "Softmax": _softmax, "LogSoftmax": _softmax, "Transpose": _transpose,
         "Normalize": _keep_layout}   # ganglion::Normalize (fuse_normalization): its lowering maps axes


def _fix_outputs(graph: Graph) -> None:
    """Graph outputs keep ONNX layout (or channels-last with io_layout='nhwc')."""
    for name in list(graph.outputs):
        t = graph.tensors[name]
        if t.perm is None or (graph.io_layout == "nhwc" and t.perm == channels_last(len(t.shape))):
            continue
        stored = graph.fresh(name + "_stored")
        graph.tensors[stored] = Tensor(stored, t.shape, t.dtype, perm=t.perm)
        for n in graph.nodes:
            n.inputs = [stored if i == name else i for i in n.inputs]
            n.outputs = [stored if o == name else o for o in n.outputs]
        perm = [t.perm.index(d) for d in range(len(t.shape))]
        t.perm = None
        graph.nodes.append(Node(LAYOUT_OP, graph.fresh("transpose_" + name), [stored], [name],
                                {"perm": perm}, LAYOUT_DOMAIN))
