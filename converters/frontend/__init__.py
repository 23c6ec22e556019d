"""The converter's front door: load and check ONNX, make shapes static, build the IR.

    load_model(path, input_shapes=None) -> onnx.ModelProto   checked, opset 11-21 (7-10 raised), static shapes,
                                                               float16 compute raised to float32 (half.py),
                                                               every node named (names.py)
    to_graph(model) -> converters.ir.Graph                    defaults filled, folded to a fixed
                                                               point (shapes, constants, If/Loop
                                                               with constant control: fold.py),
                                                               opset quirks normalized

Errors: ``ModelLoadError`` (corrupt/truncated file, unsafe external data, checker, opset),
``ShapeError`` (a dynamic dimension that cannot be fixed) and ``DataDependentError`` (shapes that
depend on values: detector post-processing, control flow on data), each naming where and how to fix.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx
from onnx.inliner import inline_local_functions

from converters.frontend import dynamic, fold, quirks, shapes, subgraphs
from converters.frontend.half import raise_float16
from converters.frontend.load import check, default_opset, read_model, upgrade_opset
from converters.frontend.names import name_nodes
from converters.frontend.quantized import dequantize, with_ir4   # already-quantized models
from converters.frontend.to_ir import to_graph as _to_graph
from converters.ir import Graph

__all__ = ["load_model", "to_graph", "prepare", "dequantize"]


def load_model(path: str | os.PathLike,
               input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """Load ``path`` safely and return a checked model whose shapes are all inferred and static."""
    model = read_model(path)
    return prepare(model, input_shapes, where=str(path))


def prepare(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
            where: str = "<model>") -> onnx.ModelProto:
    """The in-memory half of ``load_model``: opset gate, checker, node names, static shapes."""
    model = upgrade_opset(model)   # opset 7-10 raised to 11 (load.py)
    default_opset(model)
    model = with_ir4(model)   # ONNX Runtime's quantizer output of an IR-3 model
    check(model, where)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never edit the caller's proto
    raise_float16(model)   # mixed-precision exports compute in float32 here (half.py)
    if model.functions:  # exporters (torch.onnx dynamo) wrap modules in local functions
        model = inline_local_functions(model)
    # unnamed and repeated node names get the names --keep-float takes (onnxruntime refuses repeats)
    name_nodes(model.graph)
    subgraphs.make_unique(model)   # sibling branches may reuse names; shape inference cannot
    shapes.fix_input_shapes(model, input_shapes)
    subgraphs.forget_shapes(model)   # stale inside If/Loop bodies too, once inputs are pinned
    return shapes.infer(model)


def to_graph(model: onnx.ModelProto) -> Graph:
    """Build the IR: defaults filled, folded to a fixed point, opset quirks normalized. Nodes whose
    shapes depend on values are marked for the unsupported-op check (``dynamic.mark``)."""
    graph = _to_graph(model)
    fold.settle(graph)
    dynamic.mark(graph)
    quirks.normalize(graph)
    return graph
