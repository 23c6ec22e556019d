"""Second target: int8 QDQ ONNX (QuantizeLinear/DequantizeLinear pairs) for TensorRT and ONNX Runtime.

    params.py   activation / weight (per channel) / bias (int32) quantization parameters
    ops.py      which ops are quantized and how, as tables
    correct.py  bias correction: per-layer input means from onnxruntime, bias -= rounding error . mean
    builder.py  build(model, ranges, *, keep_float=(), profile=..., samples=None) -> onnx.ModelProto
"""
from converters.qdq.builder import PROFILES, build

__all__ = ["PROFILES", "build"]
