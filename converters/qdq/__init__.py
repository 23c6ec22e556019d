"""Second target: int8 QDQ ONNX (QuantizeLinear/DequantizeLinear pairs) for TensorRT and ONNX Runtime.

    emit.py     the float graph: the converter's IR after the passes both targets share,
                written back as ONNX
    shared.py   the parameters a TFLite build chose (activations, weight scales, corrected
                biases), read back from its flatbuffer by ONNX name: one compiler, two writers
    params.py   those parameters in QuantizeLinear/DequantizeLinear form, per profile
    ops.py      which ops are quantized and how, as tables
    builder.py  build(model, ranges, *, keep_float=(), profile=..., samples=None, tflite=None)
"""
from converters.qdq.builder import PROFILES, build

__all__ = ["PROFILES", "build"]
