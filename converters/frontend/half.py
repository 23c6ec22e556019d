"""Float16 compute raised to float32 before anything else reads the model.

Mixed-precision exports (Keras ``mixed_float16`` through tf2onnx, ``model.half()`` in torch,
onnxconverter-common's float16 conversion) keep weights and activations in float16 and cast to and
from it around the graph. TFLite's int8 and float32 kernels take none of that: every float16
tensor becomes float32 (initializers, Constant / ConstantOfShape values, ``Cast(to=FLOAT16)``,
graph inputs/outputs and value_info), which computes the same values at least as precisely. The
stale inferred shapes of the raised tensors are dropped; ``shapes.infer`` redoes them.

https://onnx.ai/onnx/operators/onnx__Cast.html, https://www.tensorflow.org/guide/mixed_precision
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
TYPED_ATTRS = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
               "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}


def _raise_tensor(tensor: onnx.TensorProto) -> bool:
    if tensor.data_type != F16:
        return False
    value = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    return True


def _raise_graph(graph: onnx.GraphProto) -> bool:
    changed = any([_raise_tensor(t) for t in graph.initializer])
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == TYPED_ATTRS.get(node.op_type) and attr.i == F16:
                attr.i, changed = F32, True
            elif attr.type == onnx.AttributeProto.TENSOR:
                changed = _raise_tensor(attr.t) or changed
            elif attr.type == onnx.AttributeProto.GRAPH:
                changed = _raise_graph(attr.g) or changed
    for vi in (*graph.input, *graph.output):
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type, changed = F32, True
    return changed


def raise_float16(model: onnx.ModelProto) -> None:
    """Rewrite ``model`` in place so that no float16 tensor remains (see module doc)."""
    if _raise_graph(model.graph):
        kept = [vi for vi in model.graph.value_info if vi.type.tensor_type.elem_type != F16]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
