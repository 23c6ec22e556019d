"""If with a constant (once shapes are pinned) condition is inlined; Loop with a constant small
trip count is unrolled; anything else is refused with the reason. Pinning keeps If models loadable
in onnxruntime (sibling branches reusing names, stale branch shapes)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from converters.calibrate.runner import make_session
from converters.errors import DataDependentError
from converters.frontend.control_flow import MAX_LOOP_UNROLL
from tests.converters.frontend.graphs import I64, const, convert_and_compare, model
from tests.converters.ops import harness as H

F = TensorProto.FLOAT


def out(name, dims=None):
    return helper.make_tensor_value_info(name, F, dims)


def if_on_batch(opset: int):
    """y = If(N == 1): then 2 * Relu(x) * w (w: an initializer of the main graph);
    else: a nested If on C == 3 whose branches read 'e' (defined in the else branch) and reuse
    the local name 't' (legal for sibling scopes)."""
    inner_inits: list = []
    inner_then = helper.make_graph([helper.make_node("Neg", ["e"], ["t"]),
                                    helper.make_node("Add", ["t", "x"], ["it"])],
                                   "inner_then", [], [out("it")])
    inner_else = helper.make_graph([helper.make_node("Sigmoid", ["e"], ["t"])], "inner_else", [], [out("t")])
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]),
                                helper.make_node("Mul", ["t", "w"], ["tw"]),
                                helper.make_node("Mul", ["tw", "two"], ["to"])],
                               "then", [], [out("to", ["N", 3, 4])], [const("two", np.float32(2))])
    else_g = helper.make_graph([helper.make_node("Tanh", ["x"], ["e"]),
                                helper.make_node("Shape", ["x"], ["es"]),
                                helper.make_node("Gather", ["es", "one"], ["c"], axis=0),
                                helper.make_node("Equal", ["c", "three"], ["c3"]),
                                helper.make_node("If", ["c3"], ["eo"], then_branch=inner_then,
                                                 else_branch=inner_else)],
                               "else", [], [out("eo", ["N", 3, 4])], inner_inits)
    inits = [const("zero", np.array(0, I64)), const("one", np.array(1, I64)),
             const("three", np.array(3, I64)), const("w", np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Equal", ["n", "one"], ["n1"]),
             helper.make_node("If", ["n1"], ["z"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Sigmoid", ["z"], ["y"])]
    return model(nodes, {"x": ["N", 3, 4]}, {"y": ["N", 3, 4]}, inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
@pytest.mark.parametrize("batch", [1, 2], ids=["then", "else-nested"])
def test_if_on_pinned_shape_is_inlined(batch, opset):
    m = if_on_batch(opset)
    graph = frontend.to_graph(frontend.prepare(m, {"x": [batch, 3, 4]}))
    assert not [n for n in graph.nodes if n.op in ("If", "Shape", "Equal")]
    expected = {1: ["Mul", "Relu", "Sigmoid"], 2: ["Add", "Neg", "Sigmoid", "Tanh"]}[batch]
    assert sorted({n.op for n in graph.nodes} - {"Identity"}) == expected
    convert_and_compare(m, {"x": [batch, 3, 4]})


def test_pinned_if_model_still_loads_in_onnxruntime():
    """Pinning used to break If models: sibling branches both defining 't' made data propagation
    fail, and branch shapes recorded by the exporter for another size made onnxruntime refuse."""
    m = if_on_batch(17)
    then_g = m.graph.node[3].attribute[0].g
    then_g.value_info.append(out("t", [5, 3, 4]))       # the exporter traced with N=5
    pinned = frontend.prepare(m, {"x": [2, 3, 4]})
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    session = make_session(pinned)
    ref = make_session(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], ref, rtol=1e-6)


def counting_loop(trip: int, opset: int = 17, carried_cond: bool = True):
    """v <- v * 0.5 + x + iter for ``trip`` iterations; scan output: each iteration's v."""
    body_nodes = [helper.make_node("Cast", ["i"], ["i_f"], to=F),
                  helper.make_node("Mul", ["v_in", "half"], ["vh"]),
                  helper.make_node("Add", ["vh", "x"], ["vx"]),
                  helper.make_node("Add", ["vx", "i_f"], ["v_out"]),
                  helper.make_node("Identity", ["v_out"], ["scan"])]
    if carried_cond:
        body_nodes.append(helper.make_node("Identity", ["c_in"], ["c_out"]))
    else:   # stop when v grows past 3: data-dependent
        body_nodes += [helper.make_node("ReduceMax", ["v_out"], ["vm"], keepdims=0),
                       helper.make_node("Less", ["vm", "three"], ["c_out"])]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []), out("v_in", [2, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), out("v_out", [2, 3]), out("scan", [2, 3])],
        [const("half", np.float32(0.5)), const("three", np.float32(3))])
    inits = [const("trip", np.array(trip, I64)), const("go", np.array(True)), const("v0", np.zeros((2, 3), np.float32))]
    nodes = [helper.make_node("Loop", ["trip", "go", "v0"], ["v", "vs"], body=body),
             helper.make_node("Relu", ["v"], ["y"]),
             helper.make_node("Relu", ["vs"], ["ys"])]
    return model(nodes, {"x": [2, 3]}, {"y": [2, 3], "ys": [trip, 2, 3]}, inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 21])
@pytest.mark.parametrize("trip", [1, 3])
def test_loop_with_constant_trip_count_is_unrolled(trip, opset):
    m = counting_loop(trip, opset)
    graph = frontend.to_graph(frontend.prepare(m, {}))
    assert "Loop" not in {n.op for n in graph.nodes}
    result = convert_and_compare(m, {"x": [2, 3]})
    assert "WHILE" not in result.ops


@pytest.mark.parametrize("case, reason", [
    ("long", f"exceeds the unroll bound {MAX_LOOP_UNROLL}"),
    ("early_stop", "may stop early"),
])
def test_loop_that_cannot_be_unrolled_is_refused_with_its_reason(case, reason):
    m = counting_loop(MAX_LOOP_UNROLL + 1) if case == "long" else counting_loop(3, carried_cond=False)
    with pytest.raises(DataDependentError) as err:
        tflite.build(frontend.prepare(m, {}), None, tflite.TFLiteOptions(quantize="none"))
    assert reason in str(err.value) and "Loop 'Loop_0'" in str(err.value)


def test_if_on_data_is_refused():
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "then", [], [out("a", [1, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [], [out("b", [1, 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["pos"]),
             helper.make_node("If", ["pos"], ["y"], then_branch=then_g, else_branch=else_g, name="gate")]
    m = model(nodes, {"x": [1, 4]}, {"y": [1, 4]}, [const("zero", np.float32(0))], opset=11)
    with pytest.raises(DataDependentError) as err:
        tflite.build(frontend.prepare(m, {}), None, tflite.TFLiteOptions(quantize="none"))
    assert "If 'gate': its condition is computed from data" in str(err.value)


@pytest.mark.parametrize("case", ["if-then", "if-else", "loop"])
def test_expanded_control_flow_quantizes(case):
    """Tensors made by inlining have no calibration range of their own (onnxruntime never shows
    them): the backend measures them on the samples, and the int8 model stays close to float."""
    m, shapes = {"if-then": (if_on_batch(17), {"x": [1, 3, 4]}), "if-else": (if_on_batch(17), {"x": [2, 3, 4]}),
                 "loop": (counting_loop(3), {"x": [2, 3]})}[case]
    pinned = frontend.prepare(m, shapes)
    rng = np.random.default_rng(0)
    samples = [{k: rng.uniform(-2, 2, v).astype(np.float32) for k, v in shapes.items()} for _ in range(16)]
    result = tflite.build(pinned, collect_ranges(pinned, samples, progress=False),
                          tflite.TFLiteOptions(quantize="int8"), samples=samples)
    for ref, got in zip(H.ort_run(m, samples[0]), H.tflite_run(result, samples[0])):
        assert H.sqnr_db(ref, got) > 35


def test_loop_body_branching_on_the_iteration_is_unrolled_and_inlined():
    """``if i == 0: v = x else: v = v * 0.5 + x`` inside a 3-trip Loop: once unrolled, each copy's
    condition is a constant and its If is inlined, the branches reading the body's own values."""
    first = helper.make_graph([helper.make_node("Identity", ["x"], ["f"])], "first", [], [out("f", [2, 3])])
    later = helper.make_graph([helper.make_node("Mul", ["v_in", "half"], ["h"]),
                               helper.make_node("Add", ["h", "x"], ["l"])], "later", [], [out("l", [2, 3])])
    body = helper.make_graph(
        [helper.make_node("Equal", ["i", "zero"], ["is_first"]),
         helper.make_node("If", ["is_first"], ["v_out"], then_branch=first, else_branch=later),
         helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []), out("v_in", [2, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), out("v_out", [2, 3])],
        [const("half", np.float32(0.5)), const("zero", np.array(0, I64))])
    inits = [const("trip", np.array(3, I64)), const("v0", np.zeros((2, 3), np.float32))]
    nodes = [helper.make_node("Loop", ["trip", "", "v0"], ["y"], body=body)]
    m = model(nodes, {"x": [2, 3]}, {"y": [2, 3]}, inits, opset=13)
    graph = frontend.to_graph(frontend.prepare(m, {}))
    assert sorted(n.op for n in graph.nodes if n.op != "Identity") == ["Add", "Add", "Mul", "Mul"]
    convert_and_compare(m, {"x": [2, 3]})
