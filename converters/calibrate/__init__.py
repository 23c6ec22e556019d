"""Calibration: load the user's data, run the float graph, observe a range for every tensor.

    data.py        load_dataset (.npy / .npz / image folder) and TensorSpec
    preprocess.py  PreprocessSpec: how images become input tensors (recorded in the manifest)
    observers.py   auto, minmax, percentile, magnitude, entropy (KL), mse -- registered in OBSERVERS
    runner.py      collect_ranges: onnxruntime with every float intermediate exposed, streamed
    select.py      auto: every method's range scored by output error on a fake-quant model
    masks.py       attention-mask fills before a Softmax, observed as int8 saturates them
"""
from converters.calibrate.data import TensorSpec, load_dataset
from converters.calibrate.observers import OBSERVERS
from converters.calibrate.preprocess import PreprocessSpec
from converters.calibrate.runner import collect_ranges

__all__ = ["OBSERVERS", "collect_ranges", "load_dataset", "TensorSpec", "PreprocessSpec"]
