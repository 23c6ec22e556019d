"""A 0-d input (a sample rate, a gain) has no batch axis: it is fed as is, with any batch of the
other inputs, to the real LiteRT and onnxruntime backends."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converters import frontend, tflite
from core.errors import InputError
from edge.backends import TensorSpec, check_feeds, open_backend

SPECS = [TensorSpec("x", "float32", (-1, 4)), TensorSpec("sr", "int64", ())]


def test_a_scalar_feed_is_not_batched():
    feeds, batch = check_feeds(SPECS, {"x": np.ones((3, 4), np.float32), "sr": 16000})
    assert batch == 3 and feeds["sr"].shape == () and feeds["sr"].dtype == np.int64
    feeds, batch = check_feeds(SPECS, {"x": np.ones(4, np.float32), "sr": np.array([8000])})
    assert batch == 1 and feeds["sr"].shape == () and int(feeds["sr"]) == 8000
    assert check_feeds(SPECS[1:], {"sr": 16000})[1] == 1        # only scalars: one call
    with pytest.raises(InputError) as err:
        check_feeds(SPECS, {"x": np.ones((2, 4), np.float32), "sr": np.array([1, 2])})
    assert err.value.code == "input.shape" and err.value.where == "sr"


def gain_model(batch) -> onnx.ModelProto:
    """y = x * g, g a 0-d float input."""
    g = helper.make_graph([helper.make_node("Mul", ["x", "g"], ["y"])], "gain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4]),
                           helper.make_tensor_value_info("g", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_backends_run_a_model_with_a_scalar_input(tmp_path, kind):
    path = tmp_path / f"gain.{kind}"
    if kind == "onnx":
        onnx.save(gain_model("N"), path)
    else:
        model = frontend.prepare(gain_model(1))
        path.write_bytes(tflite.build(model, None, tflite.TFLiteOptions(quantize="none")).flatbuffer)
    be = open_backend(path)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = be.run({"x": x, "g": np.float32(0.5)})      # a batch of 3 with one gain
    np.testing.assert_allclose(out["y"], x * 0.5)
    np.testing.assert_allclose(be.run({"x": x[0], "g": 2.0})["y"], x[:1] * 2)
