"""collect_ranges against a real onnxruntime: the ranges it reports are the ones the graph takes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.calibrate import collect_ranges
from converters.errors import CalibrationDataError
from core.errors import UsageError


def affine_relu_model() -> onnx.ModelProto:
    """y = Relu(x * 2 + 1) -> ReduceMean: every intermediate is easy to recompute in NumPy."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["act"]),
        helper.make_node("ReduceMean", ["act"], ["y"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def samples(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1 + i, size=(1, 16)).astype(np.float32)} for i in range(count)]


def test_minmax_ranges_match_numpy_for_every_tensor():
    data = samples(12)
    ranges = collect_ranges(affine_relu_model(), data, method="minmax", progress=False)
    x = np.stack([s["x"] for s in data])
    expected = {"x": x, "scaled": x * 2, "shifted": x * 2 + 1, "act": np.maximum(x * 2 + 1, 0),
                "y": np.maximum(x * 2 + 1, 0).mean(axis=-1)}
    assert set(ranges) == set(expected)        # inputs, intermediates, outputs; no initializers
    for name, values in expected.items():
        assert ranges[name] == pytest.approx((values.min(), values.max()), rel=1e-5), name


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse", "percentile:99"])
def test_clipping_methods_stay_inside_minmax(method):
    data = samples(12)
    model = affine_relu_model()
    full = collect_ranges(model, data, progress=False)
    clipped = collect_ranges(model, data, method=method, progress=False)
    assert set(clipped) == set(full)
    for name, (lo, hi) in clipped.items():
        assert full[name][0] <= lo <= hi <= full[name][1], (name, (lo, hi), full[name])
    assert clipped["act"][0] == 0.0            # ReLU output: the zero side is never clipped


def test_works_with_the_newest_ir_version_stamp():
    model = affine_relu_model()
    model.ir_version = onnx.IR_VERSION         # may be newer than onnxruntime reads
    assert "act" in collect_ranges(model, samples(2), progress=False)


def test_missing_input_is_a_calibration_error():
    with pytest.raises(CalibrationDataError, match="no value for input"):
        collect_ranges(affine_relu_model(), [{"z": np.zeros((1, 16), np.float32)}], progress=False)


def test_wrong_shape_is_a_calibration_error_naming_the_sample():
    bad = samples(2) + [{"x": np.zeros((1, 7), np.float32)}]
    with pytest.raises(CalibrationDataError) as info:
        collect_ranges(affine_relu_model(), bad, progress=False)
    assert info.value.where == "sample 2"


def test_empty_samples_and_unknown_method():
    with pytest.raises(CalibrationDataError):
        collect_ranges(affine_relu_model(), [], progress=False)
    with pytest.raises(UsageError):
        collect_ranges(affine_relu_model(), samples(1), method="magic", progress=False)


def test_progress_bar_goes_to_stderr(capfd):
    collect_ranges(affine_relu_model(), samples(3), progress=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert "calibrating" in err


def test_cnn_example_has_a_range_per_float_tensor(resnet_tiny_path):
    model = onnx.load(str(resnet_tiny_path))
    rng = np.random.default_rng(1)
    data = [{model.graph.input[0].name: rng.normal(size=(1, 3, 64, 64)).astype(np.float32)}
            for _ in range(3)]
    ranges = collect_ranges(model, data, method="entropy", progress=False)
    produced = {o for n in model.graph.node for o in n.output}
    assert produced <= set(ranges)
    assert all(np.isfinite(lo) and np.isfinite(hi) and lo <= hi for lo, hi in ranges.values())


@pytest.mark.parametrize("method", ["minmax", "mse"])       # mse: the running-histogram path
def test_memory_does_not_grow_with_the_sample_count(resnet_tiny_path, method):
    # Observers keep running summaries: peak Python/NumPy memory for 12 samples stays near that
    # for 2 (keeping every activation makes it ~5x). Inputs are built before tracing starts.
    import tracemalloc
    model = onnx.load(str(resnet_tiny_path))
    name = model.graph.input[0].name
    rng = np.random.default_rng(3)
    peaks = {}
    for count in (2, 12):
        data = [{name: rng.normal(size=(1, 3, 64, 64)).astype(np.float32)} for _ in range(count)]
        tracemalloc.start()
        collect_ranges(model, data, method=method, progress=False)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[12] < 1.5 * peaks[2], peaks


def test_a_model_onnxruntime_cannot_run_is_a_model_load_error():
    from converters.errors import ModelLoadError
    model = affine_relu_model()
    model.graph.node[1].op_type = "NoSuchOp"           # unknown to onnxruntime
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        collect_ranges(model, samples(2), progress=False)


def non_finite_model() -> onnx.ModelProto:
    """Log and Reciprocal make NaN, -Inf and Inf from ordinary data; a float16 Cast is observed
    whole (no in-graph reduction for it)."""
    nodes = [helper.make_node("Log", ["x"], ["log"]), helper.make_node("Reciprocal", ["x"], ["inv"]),
             helper.make_node("Relu", ["x"], ["act"]), helper.make_node("Cast", ["x"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["half"], ["back"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["act", "back"], ["y"])]
    graph = helper.make_graph(nodes, "nonfinite", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("zeros", [False, True])
def test_minmax_reduced_in_graph_equals_numpy_over_finite_values(zeros):
    """The min/max observer reduces inside onnxruntime; NaN (Log of a negative), -Inf (Log 0) and
    Inf (1/0) anywhere in a tensor must give the ranges NumPy gives over the finite values."""
    rng = np.random.default_rng(3)
    data = [{"x": rng.normal(0, 2, size=(1, 64)).astype(np.float32)} for _ in range(10)]
    if zeros:
        for k, s in enumerate(data):
            s["x"][0, (k * 7) % 64] = 0.0
    ranges = collect_ranges(non_finite_model(), data, method="minmax", progress=False)
    x = np.concatenate([s["x"] for s in data])
    with np.errstate(all="ignore"):
        values = {"x": x, "log": np.log(x), "inv": 1 / x, "act": np.maximum(x, 0), "half": x.astype(np.float16),
                  "back": x.astype(np.float16).astype(np.float32)}
    values["y"] = values["act"] + values["back"]
    for name, v in values.items():
        finite = v[np.isfinite(v)].astype(np.float64)
        assert ranges[name] == pytest.approx((finite.min(), finite.max()), rel=0, abs=0), name


def test_reductions_follow_their_producers():
    """Each ReduceMin/ReduceMax/ReduceSum sits right after the node making its tensor, so onnxruntime frees
    the activation after the reduction instead of holding every one to the end."""
    from converters.calibrate.runner import expose, float_tensor_names, value_types
    model = affine_relu_model()
    types = value_types(model)
    _, produced = float_tensor_names(model, types)
    exposed = expose(model, produced, types, reduced=set(produced))
    order = [(n.op_type, n.input[0] if n.op_type.startswith("Reduce") and "calib" in n.name else n.output[0])
             for n in exposed.graph.node]
    for k, (op, tensor) in enumerate(order):
        if op in ("Mul", "Add", "Relu"):
            assert order[k + 1:k + 4] == [("ReduceMin", tensor), ("ReduceMax", tensor), ("ReduceSum", tensor)], order
    assert [o.name for o in exposed.graph.output][:2] == ["scaled::min", "scaled::max"]
