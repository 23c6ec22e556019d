"""Second target: int8 QDQ ONNX (QuantizeLinear/DequantizeLinear pairs) for TensorRT and ONNX Runtime.

    params.py   activation / weight (per channel) / bias (int32) quantization parameters
    ops.py      which ops are quantized and how, as tables
    builder.py  build(model, ranges, *, keep_float=(), profile=...) -> onnx.ModelProto
"""
from converters.qdq.builder import PROFILES, build

__all__ = ["PROFILES", "build"]
