"""bench/zoo_steps.py's closed-loop stream (the VAD task metric): each call gets the previous call's
state output, zeros at every clip start, on a real onnxruntime session of a tiny accumulator."""
import numpy as np
import onnx
from onnx import TensorProto, helper

from bench import zoo_steps
from converters.verify.runners import OnnxRunner


def _accumulator() -> onnx.ModelProto:
    """stateN = state + mean(input); output = mean(stateN) as [1, 1]."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
             helper.make_node("Add", ["state", "m"], ["stateN"]),
             helper.make_node("ReduceMean", ["stateN"], ["avg"], keepdims=0),
             helper.make_node("Reshape", ["avg", "shape"], ["output"])]
    graph = helper.make_graph(
        nodes, "acc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, 1])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_stream_feeds_the_state_back_and_restarts_it_per_clip():
    runner = OnnxRunner(_accumulator())
    # recorded states in the samples are ignored: a device feeds its own
    samples = [{"input": np.full((1, 4), v, np.float32), "state": np.full((2, 1, 1), 99, np.float32)}
               for v in (1, 1, 1, 2, 2)]
    metric = {"state": {"stateN": "state"}, "output": "output"}
    assert zoo_steps.stream(runner, samples, {0, 3}, metric) == [1.0, 2.0, 3.0, 2.0, 4.0]


def test_spread_puts_samples_from_across_the_set_in_every_chunk():
    order = zoo_steps.spread(list(range(400)), 8)
    assert sorted(order) == list(range(400))
    assert order[:8] == [0, 50, 100, 150, 200, 250, 300, 350]
    assert zoo_steps.spread([5, 6, 7], 8) == [5, 6, 7]
