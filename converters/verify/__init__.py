"""Verify: how close a quantized model stays to its float ONNX reference, overall and per layer.

    metrics.py    sqnr_db, cosine, max_abs, mean_abs, top1_agreement, accuracy (streaming)
    runners.py    onnxruntime and LiteRT runners that take/return ONNX-named float tensors
    per_layer.py  TFLite vs onnxruntime tensor by tensor, ranked by the error each layer adds
    report.py     VerifyReport: to_dict() for the manifest, render() for the terminal
    compare.py    verify(candidate, reference, samples, ...) -> VerifyReport
"""
from converters.verify.compare import load_labels, open_candidate, verify
from converters.verify.metrics import Accumulator, VerifyInputError, accuracy, metrics
from converters.verify.per_layer import LayerError, compare_layers, compare_layers_qdq
from converters.verify.report import VerifyReport

__all__ = ["Accumulator", "LayerError", "VerifyInputError", "VerifyReport", "accuracy", "compare_layers", "compare_layers_qdq",
           "load_labels",
           "metrics", "open_candidate", "verify"]
