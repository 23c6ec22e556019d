"""Run a graph whose activations are all graph outputs in consecutive stages, one stage alive at a time.

The histogram observers (``auto``, percentile, entropy, mse) need every value of every float
tensor, so the calibration pass makes each one a graph output (``runner.expose``). onnxruntime
then keeps all of them until the run returns: a 640x640 detector's 240 MB of activations per
sample, on top of the process, was most of the conversion's peak memory. Cut into stages of
consecutive nodes (graph order), each a model of its own whose inputs are the tensors it reads
from earlier stages, only one stage's outputs and the tensors that cross the cut are alive at a
time; every node still runs once, in the same order, on the same values, so every output is the
same bit for bit.

    cuts(model, budget) -> [(start, stop)]       node ranges whose outputs hold about ``budget`` bytes
    Staged(model, make_session, budget)          .stream(feeds) -> (name, value), stage by stage

Sizes that shape inference left unknown are estimated from the node's inputs (``estimated_bytes``);
a tensor crossing a cut whose type is unknown makes the model one stage, as before.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper

# Output bytes per stage: small against the process (~160 MB with onnxruntime and the model).
# The sessions share one arena (``runner.make_session(arena="shared")``), so more stages cost no
# memory of their own: PP-OCRv6 det at 640x640, 8 samples, peak 362 MB at 48 MB (21 stages),
# 334 MB at 16 MB (59 stages), the same CPU time.
BUDGET = 16 << 20


def _bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Size in bytes of every tensor whose shape and element type are fully known."""
    found = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim] if t.HasField("shape") else None
        if dims is None or any(d <= 0 for d in dims) or not t.elem_type:
            continue
        found[vi.name] = int(np.prod(dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return found


def estimated_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """``_bytes``, with the size of a tensor that shape inference left unknown (a Slice whose
    bounds a Shape computes, and all after it) estimated as its node's largest input's:
    elementwise ops and convolutions keep the size, give or take. (A Concat's sum compounded
    the over-estimate of a Slice's through every block of a YOLOv8n: gigabytes.)"""
    sizes = _bytes(model)
    consts = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        guess = max((sizes[i] for i in node.input if i and i not in consts and i in sizes), default=0)
        for out in node.output:
            sizes.setdefault(out, guess)
    return sizes


def cuts(model: onnx.ModelProto, budget: int = BUDGET) -> list[tuple[int, int]]:
    """Consecutive node ranges, each closed once its graph outputs reach ``budget`` bytes
    (``estimated_bytes``)."""
    nodes, sizes = model.graph.node, estimated_bytes(model)
    wanted = {o.name for o in model.graph.output}
    ranges, start, held = [], 0, 0
    for k, node in enumerate(nodes):
        held += sum(sizes.get(o, 0) for o in node.output if o in wanted)
        if held >= budget and k + 1 < len(nodes):
            ranges.append((start, k + 1))
            start, held = k + 1, 0
    ranges.append((start, len(nodes)))
    return ranges


def _reads(node: onnx.NodeProto) -> set[str]:
    """Names ``node`` reads: its inputs and, inside If/Loop/Scan bodies, outer-scope names."""
    found = {i for i in node.input if i}
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for sub in graph.node:
                inner.update(sub.output)
            for sub in graph.node:
                found |= _reads(sub) - inner
    return found


def _specs(model: onnx.ModelProto, ranges: list[tuple[int, int]]) -> list[tuple] | None:
    """[(stage model, its inputs, its outputs, names later stages read)], or None for one stage
    (one range, or a tensor crossing a cut whose type is not recorded)."""
    if len(ranges) < 2:
        return None
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    infos = {vi.name: vi for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
    used = [set().union(*(_reads(n) for n in graph.node[a:b])) for a, b in ranges]
    reads = [names - set(inits) for names in used]
    finals = [o.name for o in graph.output]
    specs = []
    for k, (a, b) in enumerate(ranges):
        later = set().union(*reads[k + 1:])
        made = {o for n in graph.node[a:b] for o in n.output if o}
        ins = sorted(reads[k] - made)
        outs = [o for o in finals if o in made] + sorted((made & later) - set(finals))
        if any(not infos.get(n) or not infos[n].type.tensor_type.elem_type for n in ins + outs):
            return None
        sub = helper.make_graph(list(graph.node[a:b]), f"{graph.name}_stage{k}", [infos[n] for n in ins],
                                [infos[n] for n in outs], [inits[n] for n in sorted(used[k] & set(inits))])
        sub.value_info.extend(vi for vi in graph.value_info if vi.name in made and vi.name not in outs)
        staged = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        staged.functions.extend(model.functions)
        specs.append((staged, ins, outs, later))
    return specs


class Staged:
    """The stages of ``model`` (``cuts``), each an onnxruntime session from ``make_session``."""

    def __init__(self, model: onnx.ModelProto, make_session, budget: int | None = None):
        specs = _specs(model, cuts(model, BUDGET if budget is None else budget))
        if specs is None:                          # one stage: the model itself, every feed
            outs = [o.name for o in model.graph.output]
            self.stages = [(make_session(model), None, outs, set())]
        else:
            self.stages = [(make_session(sub), ins, outs, later) for sub, ins, outs, later in specs]

    @property
    def session(self):
        """The first stage's session (its inputs are the model's: ``check_feeds`` reads them)."""
        return self.stages[0][0]

    def stream(self, feeds: dict[str, np.ndarray], run) -> Iterator[tuple[str, np.ndarray]]:
        """(graph output name, value) of one sample, stage by stage; ``run(session, names, feeds)``
        runs one stage. Only the values a later stage reads are kept between stages."""
        env = dict(feeds)
        for session, ins, outs, later in self.stages:
            values = run(session, outs, env if ins is None else {n: env[n] for n in ins})
            for name, value in zip(outs, values):
                if name in later:
                    env[name] = value
                yield name, value
            del values
            env = {n: v for n, v in env.items() if n in later}
