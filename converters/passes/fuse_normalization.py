"""Recognize normalizations written out op by op and compute them as one ``ganglion::Normalize``.

Exporters without a LayerNormalization op (opset < 17, jax2tf, hand-written PyTorch modules,
T5/LLaMA RMSNorm, GroupNorm through a Reshape) leave the statistics as elementwise ops, in forms
that int8 cannot hold:

    mean(y)   ReduceMean(y) | ReduceSum(y) * 1/N | ReduceSum(y) / N
    sq(y)     Mul(y, y) | Pow(y, 2)
    variance  mean(sq(x - mean(x)))          centered (PyTorch's hand-written LayerNorm)
              mean(sq(x)) - sq(mean(x))      moments (flax/jax): two int8 values of about the same
                                             size subtracted -- the difference is rounding noise
                                             (magika's LayerNorms: -727 dB per layer, accuracy 0)
              mean(sq(x)) | ReduceSumSquare(x) / N   no centering (RMSNorm)
    radicand  variance [Max(., c <= 0)] [+ eps] (Reshape/Expand/Squeeze/Unsqueeze in between)
    output    num * Reciprocal(Sqrt(r)) | num / Sqrt(r) | num * Pow(r, -0.5)
              | num * (Reciprocal(Sqrt(r)) * gamma), with num = x - mean(x) (or x: RMSNorm),
              possibly gamma * num (PyTorch's hand-written LayerNorm: w * (x - u) / sqrt(...))
    L2        x / Clip(ReduceL2(x), min=eps) | x / Max(ReduceL2(x), eps)   (F.normalize)

The output node is replaced by ``Normalize(x; axes, epsilon, center, l2)`` (then ``Mul(., gamma)``
when a constant gamma sat on the inverse deviation); the statistics nodes fall away unless
something else reads them. The lowering (``lower/norm.py``) computes the centered variance, exact
in float, and ``tflite/precision.py``'s NORM rule keeps the node float between int8 neighbours:
the LayerNormalization path. A
``Max(var, 0)`` guard only clamps the negative rounding of the moment form, which the centered
form never produces, so it is dropped; any other guard stops the match.
"""
from __future__ import annotations

from converters.ir import Graph, Node, Tensor
from converters.passes.norm_match import Matcher, Stat

DOMAIN = "ganglion"
OP = "Normalize"


def run(graph: Graph) -> bool:
    changed = False
    for root in [n for n in graph.nodes if n.op in ("Sqrt", "Pow")]:
        if root not in graph.nodes:
            continue
        m = Matcher(graph)
        found = m.statistics(root)
        if found is None:
            continue
        for out_node, gamma in m.outputs(root, found):
            if out_node in graph.nodes:
                _replace(graph, out_node, found, gamma, root.name)
                changed = True
    for div in [n for n in graph.nodes if n.op == "Div"]:
        found = Matcher(graph).l2_division(div) if div in graph.nodes else None
        if found is not None:
            _replace(graph, div, found, None, div.name)
            changed = True
    if changed:
        graph.remove_unused()
    return changed


def _replace(graph: Graph, out_node: Node, stat: Stat, gamma: str | None, root: str) -> None:
    """``out_node``'s output := Normalize(x) [* gamma], in ``out_node``'s place. ``--keep-float``
    of the output node or of the Sqrt (``root``) keeps the Normalize float."""
    out = out_node.outputs[0]
    x = graph.tensors[stat.x]
    norm_out = out
    if gamma is not None:
        norm_out = graph.fresh(out_node.name + "/normalized")
        graph.tensors[norm_out] = Tensor(norm_out, tuple(x.shape), x.dtype)
    name = graph.fresh(out_node.name + "/normalize")
    new = [Node(OP, name, [stat.x], [norm_out],
                {"axes": list(stat.axes), "epsilon": float(stat.eps), "center": int(stat.center), "l2": int(stat.l2),
                 "_absorbed": [out_node.name, root]}, DOMAIN)]
    if gamma is not None:
        new.append(Node("Mul", out_node.name, [norm_out, gamma], [out]))
    at = graph.nodes.index(out_node)
    graph.nodes[at:at + 1] = new

