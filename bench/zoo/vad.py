"""The streaming VAD of the zoo: two exported LSTM branches joined by an ONNX If on the sample rate.

silero-vad ships this shape: inputs ``input`` [1, 512] float, ``state`` [2, 1, 128] float and a
0-d int64 ``sr``; ``If(sr == 16000)`` picks one of two complete networks (each STFT -> encoder ->
LSTM -> probability), and ``stateN`` is fed back as the next call's ``state``. torch cannot trace
a branch on a tensor's value, so each branch is exported alone and the If is assembled here;
as torch's exporter does for scripted models, the weights are initializers of the main graph
that the branches read from the outer scope.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

import nets
from tune import scale_output

OUTER = ("input", "state")          # names the branches read from the main graph


def _tuned(n_fft: int, hop: int, audio: np.ndarray) -> nets.VadBranch:
    """A branch whose activations, state and probability vary like a trained one's (tune.py)."""
    model = nets.VadBranch(n_fft, hop).eval()
    chunks = torch.from_numpy(audio[: len(audio) // 512 * 512].reshape(-1, 1, 512))
    batches = [(c, torch.zeros(2, 1, 128)) for c in chunks[:64]]
    for layer in [m for m in model.encoder if isinstance(m, torch.nn.Conv1d)]:
        scale_output(model, layer, batches, 1.0)
    with torch.no_grad():
        for name, p in model.lstm.named_parameters():
            p.mul_(2.0 if name.startswith("weight") else 1.0)
    scale_output(model, model.out, batches, 2.0)
    return model


def _export_branch(model: nets.VadBranch, opset: int, tmp: Path) -> onnx.GraphProto:
    args = (torch.zeros(1, 512), torch.zeros(2, 1, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=opset, input_names=list(OUTER),
                          output_names=["output", "stateN"])
    graph = onnx.load(str(tmp)).graph
    tmp.unlink()
    return graph


def _renamed(protos, rename) -> list:
    """Copies of named protos (initializers, value infos) under their new names."""
    out = []
    for proto in protos:
        copy = type(proto)()
        copy.CopyFrom(proto)
        copy.name = rename(proto.name)
        out.append(copy)
    return out


def _prefixed(graph: onnx.GraphProto, prefix: str) -> tuple[onnx.GraphProto, list[onnx.TensorProto]]:
    """The branch as an If body (no inputs, every internal name prefixed) and its initializers."""
    rename = lambda n: n if (not n or n in OUTER) else f"{prefix}/{n}"      # noqa: E731
    nodes = []
    for node in graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = rename(node.name or f"{node.op_type}_{len(nodes)}")
        n.input[:] = [rename(x) for x in node.input]
        n.output[:] = [rename(x) for x in node.output]
        nodes.append(n)
    body = helper.make_graph(nodes, f"{prefix}_branch", [], _renamed(graph.output, rename))
    return body, _renamed(graph.initializer, rename)


def build(path: Path, audio: np.ndarray, opset: int = 16) -> onnx.ModelProto:
    """Write the If model to ``path``; ``audio`` (16 kHz) sets the branches' activation scales."""
    torch.manual_seed(0)
    g16, init16 = _prefixed(_export_branch(_tuned(256, 128, audio), opset, path.with_name("b16.onnx")), "sr16k")
    g8, init8 = _prefixed(_export_branch(_tuned(128, 64, audio[::2]), opset, path.with_name("b8.onnx")), "sr8k")
    nodes = [helper.make_node("Constant", [], ["sr_16k"], name="sr_16k",
                              value=helper.make_tensor("v", TensorProto.INT64, [], [16000])),
             helper.make_node("Equal", ["sr", "sr_16k"], ["is_16k"], name="is_16k"),
             helper.make_node("If", ["is_16k"], ["output", "stateN"], name="If_sr", then_branch=g16, else_branch=g8)]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 128]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, 128])],
        initializer=init16 + init8)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ganglion-zoo")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def record(model: onnx.ModelProto, audio: np.ndarray, sr: int = 16000) -> dict[str, np.ndarray]:
    """Run the model over ``audio`` in 512-sample chunks, state fed back; every call's inputs."""
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    chunks, states = [], []
    for i in range(len(audio) // 512):
        chunk = audio[None, i * 512:(i + 1) * 512]
        chunks.append(chunk)
        states.append(state)
        _, state = sess.run(None, {"input": chunk, "state": state, "sr": np.array(sr, np.int64)})
    return {"input": np.stack(chunks), "state": np.stack(states), "sr": np.full(len(chunks), sr, np.int64)}
