"""Small models with unusual inputs, built with onnx.helper at test time (no files committed).

    stateful(path)           x [1, 4] float, state [1, 8] float, sr int64 scalar ->
                             stateN = tanh((x * sr / 16000) W + state U), y = stateN V
    stateful_dynamic(path, state)   silero VAD's dynamic dims: x [batch, sequence], state [2, ?, 8]
                             (``state``: "named" 'batch', "fed" unnamed and broadcast into stateN,
                             "summed" unnamed and reduced, so inference makes stateN static)
    int_input(path, dtype, shape)   an integer/bool input cast to float, then a MatMul
    recording(n)             a smooth sequence of x (and sr) samples: what a streaming model hears
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

STATE = 8


def _save(model: onnx.ModelProto, path) -> str:
    model.ir_version = 8            # onnxruntime of this venv reads IR <= 10; helper stamps the newest
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def stateful(path, *, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    weights = {"W": rng.normal(0, .5, (4, STATE)), "U": rng.normal(0, .3, (STATE, STATE)),
               "V": rng.normal(0, .5, (STATE, 2)), "inv": np.array(1 / 16000)}
    nodes = [h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT, name="cast_sr"),
             h.make_node("Mul", ["srf", "inv"], ["gain"], name="gain"),
             h.make_node("Mul", ["x", "gain"], ["xs"], name="scale_x"),
             h.make_node("MatMul", ["xs", "W"], ["a"], name="in_proj"),
             h.make_node("MatMul", ["state", "U"], ["b"], name="rec_proj"),
             h.make_node("Add", ["a", "b"], ["c"], name="sum"),
             h.make_node("Tanh", ["c"], ["stateN"], name="tanh"),
             h.make_node("MatMul", ["stateN", "V"], ["y"], name="head")]
    graph = h.make_graph(
        nodes, "stateful",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 4]), h.make_tensor_value_info("state", T.FLOAT, [1, STATE]),
         h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 2]), h.make_tensor_value_info("stateN", T.FLOAT, [1, STATE])],
        [nh.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def stateful_dynamic(path, state: str) -> str:
    rng = np.random.default_rng(2)
    weights = {"W": rng.normal(0, .5, (4, STATE)), "U": rng.normal(0, .3, (STATE, STATE)),
               "V": rng.normal(0, .5, (STATE, 2))}
    recurrent = [h.make_node("MatMul", ["state", "U"], ["b"], name="rec_proj")]
    if state == "summed":
        recurrent = [h.make_node("ReduceSum", ["state", "axis1"], ["s1"], keepdims=1, name="sum_batch"),
                     h.make_node("MatMul", ["s1", "U"], ["b"], name="rec_proj")]
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"], name="in_proj"), *recurrent,
             h.make_node("Add", ["a", "b"], ["c"], name="sum"),
             h.make_node("Tanh", ["c"], ["stateN"], name="tanh"),
             h.make_node("ReduceMean", ["stateN"], ["m"], axes=[0], keepdims=0, name="mean"),
             h.make_node("MatMul", ["m", "V"], ["y"], name="head")]
    dim = "batch" if state == "named" else None
    graph = h.make_graph(
        nodes, "stateful_dynamic",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", "sequence"]),
         h.make_tensor_value_info("state", T.FLOAT, [2, dim, STATE])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 2]),
         h.make_tensor_value_info("stateN", T.FLOAT, [2, dim, STATE])],
        [nh.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
        + [nh.from_array(np.array([1], np.int64), "axis1")])
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def int_input(path, dtype: str, shape: list[int], arith: bool = False) -> str:
    """ids (``dtype``, ``shape``) -> Cast -> float -> MatMul with a [last, 3] weight (a 0-d input: Mul).
    ``arith``: ids * 3 + 1 in the input's integer type first (silero VAD computes ``sr * 0``)."""
    elem = h.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(1)
    last = shape[-1] if shape else 1
    ints = [nh.from_array(np.array(3, dtype), "three"), nh.from_array(np.array(1, dtype), "one")] if arith else []
    nodes = [h.make_node("Mul", ["ids", "three"], ["i3"], name="times3"),
             h.make_node("Add", ["i3", "one"], ["i4"], name="plus1")] if arith else []
    nodes += [h.make_node("Cast", ["i4" if arith else "ids"], ["f"], to=T.FLOAT, name="cast"),
             h.make_node("Mul", ["f", "scale"], ["g"], name="scale"),
             h.make_node("MatMul" if shape else "Mul", ["g", "W"], ["y"], name="proj")]
    weight = rng.normal(0, 1, (last, 3)) if shape else np.array(0.7)
    graph = h.make_graph(nodes, "ints", [h.make_tensor_value_info("ids", elem, shape)],
                         [h.make_tensor_value_info("y", T.FLOAT, [*shape[:-1], 3] if shape else [])],
                         [nh.from_array(np.float32(0.1), "scale"), nh.from_array(weight.astype(np.float32), "W"),
                          *ints])
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def recording(n: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """x: [n, 1, 4], a few drifting sinusoids plus noise; sr: [n] int64 (one scalar per step)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    x = np.sin(t / 7.0 + np.arange(4)) + 0.1 * rng.normal(size=(n, 4))
    return {"x": x[:, None].astype(np.float32), "sr": np.full(n, 16000, np.int64)}
