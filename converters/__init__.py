"""Ganglion's host-side converter: ONNX -> IR -> passes -> calibration -> int8 TFLite / QDQ ONNX.

Host only (needs onnx and onnxruntime). ``edge`` never imports this package.
"""
