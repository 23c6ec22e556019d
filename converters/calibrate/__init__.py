"""Calibration: load the user's data, run the float graph, observe a range for every tensor.

    data.py        load_dataset (.npy / .npz / image folder) and TensorSpec
    preprocess.py  PreprocessSpec: how images become input tensors (recorded in the manifest)
    observers.py   auto, minmax, percentile, entropy (KL), mse -- registered in OBSERVERS
    runner.py      collect_ranges: onnxruntime with every float intermediate exposed, streamed
    select.py      auto: every method's range scored by output error on a fake-quant model
"""
from converters.calibrate.observers import OBSERVERS
from converters.calibrate.runner import collect_ranges

__all__ = ["OBSERVERS", "collect_ranges", "load_dataset", "TensorSpec", "PreprocessSpec"]


def __getattr__(name):
    # data/preprocess pull in Pillow lazily; keep `import converters.calibrate` light.
    if name in ("load_dataset", "TensorSpec"):
        from converters.calibrate import data
        return getattr(data, name)
    if name == "PreprocessSpec":
        from converters.calibrate.preprocess import PreprocessSpec
        return PreprocessSpec
    raise AttributeError(name)
