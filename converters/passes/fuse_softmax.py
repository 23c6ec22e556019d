"""Recognize a softmax written out op by op and replace it with one Softmax node.

jax2tf (flax's ``nn.softmax``), hand-written attention and older exporters emit

    e = Exp(x - m)      m: any per-row value, usually ReduceMax(x) (jax guards it: Max(-inf, .))
    y = e / ReduceSum(e, axis)   or   e * Reciprocal(ReduceSum(e, axis))

Softmax is shift-invariant, so ``y = Softmax(x, axis)`` whatever ``m`` is, as long as it is
constant along ``axis``. Op by op, int8 cannot hold it: EXP's int8 input has the steps of the
logits' whole range (magika: 214 classes, own SQNR -20 dB), and its output rounds every small
probability to zero before the sum. TFLite's SOFTMAX kernel (int8 output fixed at 1/256 steps,
``tflite/rules.py``) and ``tflite/precision.py``'s softmax rules handle the fused op.
"""
from __future__ import annotations

from converters.ir import Graph, Node
from converters.passes.norm_match import Matcher


def run(graph: Graph) -> bool:
    changed = False
    for exp in [n for n in graph.nodes if n.op == "Exp"]:
        m = Matcher(graph)
        found = _match(m, exp)
        if found is None:
            continue
        x, axis, out = found
        at = graph.nodes.index(out)
        graph.nodes[at] = Node("Softmax", out.name, [x], list(out.outputs),
                               {"axis": axis, "_absorbed": [exp.name]})
        changed = True
    if changed:
        graph.remove_unused()
    return changed


def _match(m: Matcher, exp: Node):
    """(softmax input, axis, the node that writes the probabilities) or None."""
    e = exp.outputs[0]
    for s in m.cons.get(e, []):
        if s.op != "ReduceSum" or s.inputs[0] != e:
            continue
        found = m.axes_of(s)
        if found is None or len(found[1]) != 1:
            continue
        axis = found[1][0]
        for node, divisor in _dividers(m, e, s.outputs[0]):
            if m.aligned(divisor, e, (axis,)):      # one sum per row, broadcast along the axis
                return _shifted_input(m, exp.inputs[0], axis), axis, node
    return None


def _dividers(m: Matcher, e: str, total: str):
    """[(node, its divisor operand)] for ``e / total`` and ``e * Reciprocal(total)`` (``total``
    through pass-through ops)."""
    found = []
    for n in m.cons.get(e, []):
        if n.op == "Div" and n.inputs[0] == e and m.peel(n.inputs[1]) == total:
            found.append((n, n.inputs[1]))
        elif n.op == "Mul":
            other = n.inputs[1] if n.inputs[0] == e else n.inputs[0]
            rec = m.op(other)
            if rec is not None and rec.op == "Reciprocal" and m.peel(rec.inputs[0]) == total:
                found.append((n, other))
    return [f for f in found if m.shape(f[0].outputs[0]) == m.shape(e)]


def _shifted_input(m: Matcher, z: str, axis: int) -> str:
    """x when ``z = x - c`` with ``c`` constant along ``axis`` (softmax ignores the shift), else z."""
    sub = m.op(z)
    if sub is not None and sub.op == "Sub" and m.shape(sub.inputs[0]) == m.shape(z) \
            and m.aligned(sub.inputs[1], z, (axis,)):
        return sub.inputs[0]
    return z
