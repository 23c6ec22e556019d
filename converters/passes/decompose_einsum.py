"""Rewrite Einsum (https://onnx.ai/onnx/operators/onnx__Einsum.html) as Transpose/Reshape/MatMul.

TFLite has no einsum builtin. Attention blocks written with ``torch.einsum`` (MaxViT:
``"B G H I D, B G H J D -> B G H I J"``) export as Einsum nodes; each two-operand contraction is
one batched matrix product once its indices are grouped:

    A -> Transpose to (batch, A-only, contracted) -> Reshape [prod batch, M, K]
    B -> Transpose to (batch, contracted, B-only) -> Reshape [prod batch, K, N]
    MatMul -> [prod batch, M, N] -> Reshape (batch, A-only, B-only) -> Transpose to the output order

Indices that appear in one operand only and not in the output are summed first (ReduceSum); a
one-operand Einsum is ReduceSum + Transpose. Identity transposes/reshapes are not emitted and a
constant operand is rearranged here, so MatMul sees a plain constant (FULLY_CONNECTED weights).
What stays (a repeated index in one operand: diagonal/trace; three operands; an index of
different sizes in the two operands, i.e. broadcasting) is left as Einsum with the reason, which
the unsupported-op check reports.
"""
from __future__ import annotations

import numpy as np

from converters.ir import Graph, Node, Tensor


def run(graph: Graph) -> bool:
    changed, i = False, 0
    while i < len(graph.nodes):
        node = graph.nodes[i]
        if node.op != "Einsum" or node.domain:
            i += 1
            continue
        spec, why = parse(node.attrs.get("equation", ""), [graph.tensors[x].shape for x in node.inputs])
        if spec is not None and len(spec[0]) > 2:
            why = "Einsum over more than two operands"
        if why is None:
            new = _Builder(graph, node).build(*spec)
            if new is None:
                why = "an index has different sizes in the two operands (broadcasting)"
        if why is not None:
            node.attrs["_unresolved"] = f"equation {node.attrs.get('equation')!r}: {why} is not supported"
            i += 1
            continue
        graph.nodes[i:i + 1] = new
        i += len(new)
        changed = True
    if changed:
        graph.remove_unused()
    return changed


def parse(equation, shapes) -> tuple[tuple[list[str], str] | None, str | None]:
    """((operand index strings, output index string), None) or (None, why). Ellipses become
    fresh index characters; implicit mode's output is the indices used once, sorted."""
    eq = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes) or any(s is None for s in shapes):
        return None, "operands without static shapes"
    letters = set(eq) - set(",->.")
    spare = (chr(c) for c in range(0x100, 0x200) if chr(c) not in letters)
    widest = max(len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes))
    fill = "".join(next(spare) for _ in range(max(widest, 0)))
    terms = [t.replace("...", fill[len(fill) - (len(s) - len(t.replace("...", ""))):]) for t, s in zip(terms, shapes)]
    if not arrow:
        counts = {c: sum(t.count(c) for t in terms) for c in set("".join(terms))}
        out = fill + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in fill))
    out = out.replace("...", fill)
    if any(len(t) != len(s) for t, s in zip(terms, shapes)):
        return None, "an operand's rank differs from its indices"
    if any(len(set(t)) != len(t) for t in [*terms, out]):
        return None, "a repeated index in one operand (diagonal or trace)"
    return (terms, out), None


class _Builder:
    """The replacement nodes of one Einsum, with fresh tensors named after it."""

    def __init__(self, graph: Graph, node: Node):
        self.g, self.node, self.nodes = graph, node, []
        self.dtype = graph.tensors[node.inputs[0]].dtype

    def build(self, terms: list[str], out: str) -> list[Node] | None:
        names = list(self.node.inputs)
        for k, term in enumerate(terms):       # indices only this operand has and the output lacks
            others = "".join(t for j, t in enumerate(terms) if j != k) + out
            summed = [a for a, c in enumerate(term) if c not in others]
            if summed:
                names[k] = self._reduce(names[k], summed)
                terms[k] = "".join(c for c in term if c in others)
        if len(terms) == 1:
            self._transpose(names[0], [terms[0].index(c) for c in out], final=True)
            return self.nodes
        a, b = terms
        size = {c: self._shape(names[0])[a.index(c)] for c in a}
        for c in b:
            if size.setdefault(c, self._shape(names[1])[b.index(c)]) != self._shape(names[1])[b.index(c)]:
                return None
        batch = [c for c in out if c in a and c in b]
        con = [c for c in a if c in b and c not in out]
        af, bf = [c for c in a if c not in b], [c for c in b if c not in a]
        dims = lambda cs: int(np.prod([size[c] for c in cs], dtype=np.int64))     # noqa: E731
        lead = [dims(batch)] if batch else []          # none: a 2-D product (FULLY_CONNECTED for weights)
        lhs = self._arrange(names[0], a, batch + af + con, [*lead, dims(af), dims(con)])
        rhs = self._arrange(names[1], b, batch + con + bf, [*lead, dims(con), dims(bf)])
        product = self._add("MatMul", [lhs, rhs], (*lead, dims(af), dims(bf)), {})
        grouped = batch + af + bf
        product = self._reshape(product, [size[c] for c in grouped])
        self._transpose(product, [grouped.index(c) for c in out], final=True)
        return self.nodes

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.g.tensors[name].shape

    def _arrange(self, name: str, term: str, order: list[str], shape: list[int]) -> str:
        return self._reshape(self._transpose(name, [term.index(c) for c in order]), shape)

    def _add(self, op: str, inputs: list[str], shape, attrs: dict, output: str | None = None) -> str:
        out = output or self.g.fresh(f"{self.node.name}/{op.lower()}")
        if output is None:
            self.g.tensors[out] = Tensor(out, tuple(int(d) for d in shape), self.dtype)
        value = self.g.const(inputs[0]) if len(inputs) == 1 else None
        if value is not None:       # a constant operand is rearranged now, not at run time
            value = np.sum(value, axis=tuple(attrs["axes"])) if op == "ReduceSum" else value
            value = np.transpose(value, attrs["perm"]) if op == "Transpose" else value
            self.g.set_const(out, np.ascontiguousarray(value).reshape(shape))
            return out
        self.nodes.append(Node(op, self.g.fresh(f"{self.node.name}/{op}"), inputs, [out], attrs))
        return out

    def _reduce(self, name: str, axes: list[int]) -> str:
        shape = [d for a, d in enumerate(self._shape(name)) if a not in axes]
        return self._add("ReduceSum", [name], shape, {"axes": axes, "keepdims": 0})

    def _reshape(self, name: str, shape: list[int]) -> str:
        if tuple(shape) == self._shape(name):
            return name
        return self._add("Reshape", [name], shape, {})

    def _transpose(self, name: str, perm: list[int], final: bool = False) -> str:
        output = self.node.outputs[0] if final else None
        if perm == sorted(perm):
            if not final:
                return name
            if self.nodes and self.nodes[-1].outputs == [name]:     # the last node writes the output
                self.nodes[-1].outputs = [output]
                del self.g.tensors[name]
                return output
            return self._add("Identity", [name], self._shape(name), {}, output)
        shape = [self._shape(name)[p] for p in perm]
        return self._add("Transpose", [name], shape, {"perm": perm}, output)
