"""Frontend: safe loading, opset gate, static shapes, quirks, and one report of unsupported ops."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import frontend, tflite
from converters.errors import ModelLoadError, ShapeError, UnsupportedOpsError
from converters.lower import problems_of
from converters.passes import run_pipeline


def _relu_model(opset=17, shape=("N", 3, 8, 8)):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_loads_and_fixes_symbolic_batch(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(), path)
    m = frontend.load_model(path)
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 8, 8]
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 8, 8]


def test_truncated_file_is_model_load_error(tmp_path):
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    data = helper.make_model(g).SerializeToString()
    for cut in (10, len(data) // 2, len(data) - 3):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError) as err:
            frontend.load_model(path)
        assert err.value.where and err.value.hint


def test_garbage_and_missing_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(os.urandom(200))
    with pytest.raises(ModelLoadError):
        frontend.load_model(path)
    with pytest.raises(ModelLoadError, match="not found"):
        frontend.load_model(tmp_path / "nope.onnx")


def _external_model(tmp_path, location: str):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin", "sub/../../secret.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path, location)
    with pytest.raises(ModelLoadError, match="external data") as err:
        frontend.load_model(path)
    assert "w" in err.value.where


def test_external_data_symlink_escape_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path, "weights.bin")
    os.symlink(tmp_path / "secret.bin", path.parent / "weights.bin")
    with pytest.raises(ModelLoadError, match="symlink"):
        frontend.load_model(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(np.full(16, 2.0, np.float32).tobytes())
    m = frontend.load_model(path)
    assert numpy_helper.to_array(m.graph.initializer[0])[0, 0] == 2.0


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_opset_7_to_10_is_raised_to_11(tmp_path, opset):
    # ONNX's own model zoo (onnx/backend/test/data/light) is opset 9: onnx.version_converter lifts it
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(opset=opset), path)
    m = frontend.load_model(path)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [11]


@pytest.mark.parametrize("opset", [6, 22])
def test_opset_outside_7_21_is_refused(tmp_path, opset):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(opset=opset), path)
    with pytest.raises(ModelLoadError) as err:
        frontend.load_model(path)
    assert err.value.code == "convert.opset" and "opset_version" in err.value.hint


def test_dynamic_non_batch_dim_names_input_and_hint(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(shape=("N", 3, "H", "W")), path)
    with pytest.raises(ShapeError) as err:
        frontend.load_model(path)
    assert "'x'" in err.value.message and "--input-shape x=" in err.value.hint
    m = frontend.load_model(path, {"x": [1, 3, 16, 20]})
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 16, 20]


def test_bad_overrides(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(shape=("N", 3, "H", "W")), path)
    with pytest.raises(ShapeError, match="unknown"):
        frontend.load_model(path, {"z": [1]})
    with pytest.raises(ShapeError, match="rank"):
        frontend.load_model(path, {"x": [1, 3, 4]})
    with pytest.raises(ShapeError, match="fixed"):
        frontend.load_model(path, {"x": [1, 4, 8, 8]})


def test_all_unsupported_ops_reported_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="nms"),
             helper.make_node("TopK", ["a", "k"], ["c", "i"], name="topk"),
             helper.make_node("Resize", ["a", "", "sc"], ["d"], mode="cubic", name="cubic"),
             helper.make_node("Custom", ["a"], ["e"], domain="my.domain", name="custom")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "bcde"],
                          [numpy_helper.from_array(np.array([2], np.int64), "k"),
                           numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    graph = frontend.to_graph(onnx.shape_inference.infer_shapes(m))
    run_pipeline(graph)
    problems = problems_of(graph)
    text = "\n".join(problems)
    for name in ("nms", "topk", "cubic", "custom"):
        assert name in text
    assert len(problems) == 4
    with pytest.raises(UnsupportedOpsError) as err:
        tflite.build(onnx.shape_inference.infer_shapes(m), None, tflite.TFLiteOptions(quantize="none"))
    # NonMaxSuppression makes the refusal the data-dependent kind (still every problem, one list)
    assert len(err.value.problems) == 4 and err.value.code == "convert.data_dependent"
    assert isinstance(err.value, UnsupportedOpsError) and "post-processing" in err.value.hint


def test_shape_chain_folds_to_a_constant_reshape():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (a typical exporter flatten) folds away."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 18])], inits)
    m = frontend.prepare(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    graph = frontend.to_graph(m)
    run_pipeline(graph)
    assert [n.op for n in graph.nodes] == ["Reshape"]
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert res.ops == ["RESHAPE"]


def test_identity_and_dropout_are_dropped_and_output_name_kept():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Identity", ["b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = frontend.prepare(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    res = tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert res.ops == ["RELU"] and res.outputs[0].name == "y"


def test_a_failing_lowering_becomes_a_typed_error_naming_the_node(monkeypatch):
    from converters.errors import ConvertError
    from converters.lower import registry

    def broken(ctx, node):
        raise IndexError("boom")

    key = "Relu"
    monkeypatch.setitem(registry.LOWERINGS, key,
                        [registry.Lowering(key, 1, broken, None)] + registry.LOWERINGS[key])
    m = frontend.prepare(_relu_model(shape=(1, 3, 4, 4)))
    with pytest.raises(ConvertError) as err:
        tflite.build(m, None, tflite.TFLiteOptions(quantize="none"))
    assert err.value.code == "convert.lowering" and "Relu" in err.value.where and "boom" in err.value.message


def test_local_functions_are_inlined():
    """torch.onnx's dynamo exporter wraps modules in model-local functions; they must convert."""
    fn = helper.make_function("my.fns", "Block", ["a"], ["b"],
                              [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Sigmoid", ["r"], ["b"])],
                              [helper.make_opsetid("", 17)])
    g = helper.make_graph([helper.make_node("Block", ["x"], ["y"], domain="my.fns")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.fns", 1)],
                          functions=[fn])
    res = tflite.build(frontend.prepare(m), None, tflite.TFLiteOptions(quantize="none"))
    assert res.ops == ["RELU", "LOGISTIC"]


@pytest.mark.parametrize("mask_used", [False, True])
def test_dropout_mask_output_only_refused_when_read(mask_used):
    # opset <= 11 exporters name the mask even when nothing reads it (AlexNet, VGG, SqueezeNet)
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], ratio=0.5),
             helper.make_node("Relu", ["d"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])]
    if mask_used:
        outs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 3, 8, 8]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 8
    graph = frontend.to_graph(frontend.prepare(m))
    problems = problems_of(graph)
    assert bool(problems) == mask_used
    if mask_used:
        assert "mask output" in problems[0]
