"""A tiny ONNX graph builder shared by the example model scripts.

The example networks (MobileNetV2-style, ResNet-style, the digits CNN) are written with
``onnx.helper`` directly; this module only removes the bookkeeping (unique names, initializers,
seeded weights) so each model script reads like the architecture it describes.

Weights are random but *sensibly scaled*: He-normal for convolutions feeding a ReLU, LeCun-normal
for linear projections, and BatchNorm statistics that differ per channel (so per-channel
quantization matters, as it does in trained networks) while keeping activations near unit scale.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Accumulates nodes and initializers; every helper returns the name of its output."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        n = self._count.get(prefix, 0)
        self._count[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str | None = None, **attrs) -> str:
        out = self.fresh(prefix or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{out}_node", **attrs))
        return out

    # --- layers -------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int, *, stride: int = 1, group: int = 1,
             bias: bool = False, gain: float = 2.0) -> str:
        """Conv with 'same'-style explicit padding; gain 2 = He (before ReLU), 1 = LeCun (linear)."""
        fan_in = (cin // group) * k * k
        w = self.rng.normal(0.0, np.sqrt(gain / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        inputs = [x, self.const("w", w)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0.0, 0.05, cout).astype(np.float32)))
        pad = k // 2
        return self.node("Conv", inputs, "conv", kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad, pad, pad, pad], group=group)

    def batchnorm(self, x: str, c: int, *, gamma_scale: float = 1.0) -> str:
        """BatchNorm with per-channel statistics that vary the way trained ones do."""
        gamma = (self.rng.uniform(0.6, 1.4, c) * gamma_scale).astype(np.float32)
        beta = self.rng.normal(0.0, 0.1, c).astype(np.float32)
        mean = self.rng.normal(0.0, 0.1, c).astype(np.float32)
        var = self.rng.uniform(0.6, 1.6, c).astype(np.float32)
        names = [self.const(p, a) for p, a in
                 (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        return self.node("BatchNormalization", [x, *names], "bn", epsilon=1e-5)

    def relu6(self, x: str) -> str:
        """ReLU6 the way PyTorch exports it: Clip with min/max as constant inputs (opset >= 11)."""
        lo = self.const("clip_min", np.array(0.0, np.float32))
        hi = self.const("clip_max", np.array(6.0, np.float32))
        return self.node("Clip", [x, lo, hi], "relu6")

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.normal(0.0, np.sqrt(1.0 / cin), (cout, cin)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, cout).astype(np.float32)
        return self.node("Gemm", [x, self.const("fc_w", w), self.const("fc_b", b)], "gemm", transB=1)

    # --- finish -------------------------------------------------------------------------------
    def model(self, name: str, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]],
              opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="ganglion-examples")
        # IR version 8 keeps the files loadable by older onnxruntime releases too.
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def rename_output(builder: GraphBuilder, current: str, final: str) -> None:
    """Give the last node's output a stable public name (e.g. 'logits')."""
    node = builder.nodes[-1]
    if node.output[0] != current:
        raise ValueError(f"last node produces {node.output[0]!r}, not {current!r}")
    node.output[0] = final
