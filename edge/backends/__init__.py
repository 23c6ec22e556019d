"""Model backends: LiteRT, ONNX Runtime, and an in-memory one for tests.

    ModelBackend (protocol, base.py)   inputs() / outputs() / run(feeds) / close(), .events
    ├── LiteRTBackend                  litert_backend.py (XNNPACK, external delegates by path)
    ├── OnnxRuntimeBackend             ort_backend.py    (CPU; CUDA / TensorRT on Jetson)
    └── MemoryBackend                  memory.py         (a Python function; unit tests only)

``open_backend`` (open.py) picks one for a .gpk / .tflite / .onnx file. Heavy imports (LiteRT,
onnxruntime) happen only inside the backend that needs them.
"""
from edge.backends.base import (ModelBackend, TensorSpec, check_feeds, dequantize, dequantize_outputs,
                                quantize)
from edge.backends.memory import MemoryBackend
from edge.backends.open import open_backend

__all__ = ["ModelBackend", "TensorSpec", "MemoryBackend", "open_backend", "check_feeds", "quantize",
           "dequantize", "dequantize_outputs"]
