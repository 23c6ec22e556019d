"""Shape arithmetic folds to constants once input shapes are pinned, at every opset 11-21.

Each graph computes a Reshape target (and constants) from ``Shape(x)`` with the ops exporters
use, in the form the opset prescribes (Unsqueeze/Squeeze axes: attribute before 13, input since;
Split sizes: attribute before 13, input since, ``num_outputs`` since 18; Reduce axes: attribute
before 18, input since). After ``frontend.to_graph`` only the data ops are left, and the
converted model matches onnxruntime in LiteRT.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper

from converters import frontend
from converters.errors import ShapeError
from converters.frontend import fold
from tests.converters.frontend.graphs import I64, const, convert_and_compare, model, unsqueeze

OPSETS = range(11, 22)


def _split(s: str, outs: list[str], opset: int, inits: list):
    if opset < 13:
        return helper.make_node("Split", [s], outs, axis=0, split=[2, 2])
    if opset >= 18:
        return helper.make_node("Split", [s], outs, axis=0, num_outputs=2)
    inits.append(const("split_sizes", np.array([2, 2], I64)))
    return helper.make_node("Split", [s, "split_sizes"], outs, axis=0)


def _reduce_prod(x: str, y: str, opset: int, inits: list):
    if opset < 18:
        return helper.make_node("ReduceProd", [x], [y], axes=[0], keepdims=1)
    inits.append(const(f"{y}_axes", np.array([0], I64)))
    return helper.make_node("ReduceProd", [x, f"{y}_axes"], [y], keepdims=1)


def _squeeze(x: str, y: str, opset: int, inits: list):
    if opset < 13:
        return helper.make_node("Squeeze", [x], [y], axes=[0])
    inits.append(const(f"{y}_axes", np.array([0], I64)))
    return helper.make_node("Squeeze", [x, f"{y}_axes"], [y])


def shape_chain(opset: int):
    """x [N, 3, 4, 5] -> Reshape to [N, 3, 20] (target from Shape/Gather/Unsqueeze/Split/
    ReduceProd/Slice/Concat, chosen by Equal/Where), * ConstantOfShape + Expand(Cast(Range))."""
    inits = [const("zero", np.array(0, I64)), const("one", np.array(1, I64)),
             const("s1", np.array([1], I64)), const("e2", np.array([2], I64)),
             const("flat", np.array([1, -1, 1], I64))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             unsqueeze("n", "nu", [0], opset, inits),
             _split("s", ["nc", "hw2"], opset, inits),
             _reduce_prod("hw2", "hw", opset, inits),
             helper.make_node("Slice", ["nc", "s1", "e2"], ["c"]),
             helper.make_node("Concat", ["nu", "c", "hw"], ["t"], axis=0),
             helper.make_node("Equal", ["n", "one"], ["is_one"]),
             helper.make_node("Where", ["is_one", "flat", "t"], ["target"]),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Shape", ["r"], ["rs"]),
             helper.make_node("ConstantOfShape", ["rs"], ["half"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             _squeeze("hw", "hw_scalar", opset, inits),
             helper.make_node("Range", ["zero", "hw_scalar", "one"], ["idx"]),
             helper.make_node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT),
             helper.make_node("Expand", ["idx_f", "rs"], ["ramp"]),
             helper.make_node("Mul", ["r", "half"], ["rh"]),
             helper.make_node("Add", ["rh", "ramp"], ["y"])]
    return model(nodes, {"x": ["N", 3, 4, 5]}, {"y": ["N", 3, 20]}, inits, opset=opset)


@pytest.mark.parametrize("opset", OPSETS)
def test_shape_chain_folds_at_every_opset(opset):
    m = shape_chain(opset)
    graph = frontend.to_graph(frontend.prepare(m, {"x": [2, 3, 4, 5]}))
    assert sorted(n.op for n in graph.nodes) == ["Add", "Mul", "Reshape"]
    result = convert_and_compare(m, {"x": [2, 3, 4, 5]})
    assert set(result.ops) <= {"RESHAPE", "MUL", "ADD"}, result.ops


def deep_chain(stages: int, opset: int = 17):
    """``stages`` flattens, each target from the previous output's Shape through ReduceProd
    (which ONNX data propagation does not follow, so whole-model inference stops at stage 1)."""
    inits = [const("zero", np.array(0, I64)), const("s1", np.array([1], I64)),
             const("big", np.array([99], I64)), const("ax0", np.array([0], I64))]
    nodes, x = [], "x"
    for i in range(stages):
        nodes += [helper.make_node("Shape", [x], [f"sh{i}"]),
                  helper.make_node("Slice", [f"sh{i}", "zero_1", "s1"], [f"n{i}"]),
                  helper.make_node("Slice", [f"sh{i}", "s1", "big"], [f"rest{i}"]),
                  helper.make_node("ReduceProd", [f"rest{i}"], [f"p{i}"], axes=[0], keepdims=1),
                  helper.make_node("Concat", [f"n{i}", f"p{i}"], [f"t{i}"], axis=0),
                  helper.make_node("Reshape", [x, f"t{i}"], [f"r{i}"]),
                  helper.make_node("Unsqueeze", [f"r{i}", "ax0"], [f"u{i}"]) if i % 2 else
                  helper.make_node("Relu", [f"r{i}"], [f"u{i}"])]
        x = f"u{i}"
    nodes.append(helper.make_node("Flatten", [x], ["y"], axis=1))
    inits.append(const("zero_1", np.array([0], I64)))
    return model(nodes, {"x": ["N", 3, 4, 5]}, {"y": ["a", "b"]}, inits, opset=opset)


def test_deep_chain_settles_in_two_sweeps():
    """12 dependent shape computations: a fixed 8 fold/infer rounds left stages 9-12 unknown."""
    pinned = frontend.prepare(deep_chain(12), {"x": [2, 3, 4, 5]})
    graph = frontend.to_graph(pinned)
    assert not [n for n in graph.nodes if n.op in ("Shape", "Slice", "ReduceProd", "Concat")]
    assert all(graph.tensors[o].shape is not None for n in graph.nodes for o in n.outputs)
    convert_and_compare(deep_chain(12), {"x": [2, 3, 4, 5]})


def test_fold_bound_is_a_typed_error(monkeypatch):
    """A graph that would not settle within the bound fails with a ShapeError, not half-folded."""
    from converters.frontend.to_ir import to_graph as ir_graph
    graph = ir_graph(frontend.prepare(deep_chain(3), {"x": [2, 3, 4, 5]}))
    monkeypatch.setattr(fold, "MAX_SWEEPS", 1)   # the first sweep changes the graph
    with pytest.raises(ShapeError) as err:
        fold.settle(graph)
    assert err.value.code == "convert.fold_limit" and err.value.hint


@pytest.mark.parametrize("op, stored", [("ConstantOfShape", 1), ("Tile", None)])
def test_a_splat_folds_to_one_stored_element_and_the_limit_holds_for_the_rest(monkeypatch, op, stored):
    """ConstantOfShape (VGG-19's test copy makes a 103M-element weight so) folds to a broadcast
    view: one element in memory, so the fold limit does not refuse it; a Tile of the same size is
    materialised and still refused over the limit."""
    from converters.frontend import evaluate
    monkeypatch.setattr(evaluate, "MAX_FOLD_ELEMENTS", 1000)    # the weight below has 2048 elements
    inits = [const("wshape", np.array([64, 32], I64)), const("row", np.full((1, 32), 0.25, np.float32)),
             const("reps", np.array([64, 1], I64))]
    make = (helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                             [1], [0.25]))
            if op == "ConstantOfShape" else helper.make_node("Tile", ["row", "reps"], ["w"]))
    m = model([make, helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": ["N", 64]}, {"y": ["N", 32]}, inits)
    graph = frontend.to_graph(frontend.prepare(m, {"x": [2, 64]}))
    w = graph.const("w")
    if stored is None:
        assert w is None and "element limit" in next(n for n in graph.nodes if n.op == "Tile").attrs["_unresolved"]
        return
    assert w.shape == (64, 32) and evaluate.stored_size(w) == stored and np.all(w == np.float32(0.25))
    convert_and_compare(m, {"x": [2, 64]})


@pytest.mark.parametrize("opset", [11, 12, 13, 17, 21])
def test_unsqueeze_attr_or_input_feeds_reshape_target(opset):
    """The shape of issue 8: Shape -> Gather -> Unsqueeze -> Concat -> Reshape (flatten)."""
    inits = [const("zero", np.array(0, I64)), const("m1", np.array([-1], I64))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             unsqueeze("n", "nu", [0], opset, inits),
             helper.make_node("Concat", ["nu", "m1"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    m = model(nodes, {"x": ["N", 3, 4, 5]}, {"y": ["N", "k"]}, inits, opset=opset)
    result = convert_and_compare(m, {"x": [3, 3, 4, 5]})
    assert result.ops == ["RESHAPE"]


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_resize_sizes_from_shape(opset):
    """Resize to 2x the input's spatial size, ``sizes`` computed from Shape(x) (scales empty)."""
    inits = [const("roi", np.array([], np.float32)), const("noscale", np.array([], np.float32)),
             const("two", np.array([1, 1, 2, 2], I64))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Mul", ["s", "two"], ["sizes"]),
             helper.make_node("Resize", ["x", "roi", "noscale", "sizes"], ["y"], mode="nearest")]
    m = model(nodes, {"x": ["N", 2, "H", "W"]}, {"y": ["N", 2, "h", "w"]}, inits, opset=opset)
    result = convert_and_compare(m, {"x": [1, 2, 3, 4]})
    assert result.ops == ["TRANSPOSE", "RESIZE_NEAREST_NEIGHBOR", "TRANSPOSE"], result.ops


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_pad_to_a_multiple_of_the_window(opset):
    """Swin-style padding: pads = (8 - H % 8) % 8 at the end of H and W, computed from Shape(x);
    pads cover every axis up to opset 17, only H and W (the ``axes`` input) from opset 18."""
    inits = [const("eight", np.array(8, I64)), const("s2", np.array([2], I64)), const("e4", np.array([4], I64)),
             const("zeros", np.array([0, 0, 0, 0], I64)), const("zero2", np.array([0, 0], I64)),
             const("hw_axes", np.array([2, 3], I64))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "s2", "e4"], ["hw"]),
             helper.make_node("Mod", ["hw", "eight"], ["rem"]),
             helper.make_node("Sub", ["eight", "rem"], ["short"]),
             helper.make_node("Mod", ["short", "eight"], ["tail"])]
    if opset < 18:
        nodes += [helper.make_node("Concat", ["zeros", "zero2", "tail"], ["pads"], axis=0),
                  helper.make_node("Pad", ["x", "pads"], ["y"])]
    else:
        nodes += [helper.make_node("Concat", ["zero2", "tail"], ["pads"], axis=0),
                  helper.make_node("Pad", ["x", "pads", "", "hw_axes"], ["y"])]
    m = model(nodes, {"x": [1, 2, "H", "W"]}, {"y": [1, 2, "h", "w"]}, inits, opset=opset)
    result = convert_and_compare(m, {"x": [1, 2, 13, 16]})
    assert result.ops == ["PAD"], result.ops

