"""ONNX's own real architectures (onnx/backend/test/data/light, shipped in the onnx package) convert
in float and int8 and run in LiteRT against onnxruntime.

The "light" models are AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
VGG-19 and ZFNet-512 at opset 9 with every weight a ``ConstantOfShape`` splat: real structure and
op coverage (opset upgrade, LRN, variadic Sum, Dropout with a mask output, BatchNorm, Concat,
channel shuffle), **not fidelity**. Constant weights make every channel of every layer equal, so
the 1000 softmax outputs are all 1/1000 and the 1000 logits feeding them are one huge value
(1e10-1e21). The test adds those logits as a second graph output (the Softmax input, where there
is one) and checks, against onnxruntime:

* float: every output > 60 dB SQNR (they match to float32 rounding);
* int8: builds, runs, finite. The probabilities' SQNR is meaningless -- TFLite's int8 SOFTMAX
  output has the fixed scale 1/256 (spec), 1/1000 rounds to 0, ~0 dB by construction -- so they
  must only stay within 2 output steps. The logits keep > 3 dB, a floor only an output stuck at
  zero or off by its own magnitude (a wrong scale, zero point, layout or layer: <= 0 dB) fails.
  Measured 48-200 dB on all but ShuffleNet, 5.5 dB there: its BatchNorms (every parameter 0.02)
  map conv outputs to 0.0189 +- 6e-5, a spread under 2 int8 steps that no int8 tensor can carry --
  the constant weights, not the converter (float is exact, keeping the layers after it float
  restores 130 dB).

VGG-19 and ZFNet-512 make fc6 weights of 103M / 75M elements (411 / 302 MB) with ConstantOfShape:
the frontend folds a splat to a broadcast view (one element in memory, under the fold limit) and
only the writer lays the bytes out. They are the big cases of this file (575 / 144 MB .tflite for
VGG-19): ~0.5-2 s each and under 1.3 GB peak RSS since issue 8's fixes (bench/light_bench.py; the
whole file ~17 s and 1.4 GB, was ~44 s and 4.5 GB on the same machine).

One calibration sample of uniform [0, 1) pixels: calibration is not what this file tests, and each
224x224 sample costs an onnxruntime pass with every activation recorded (suite budget).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import onnx
import pytest

from converters import frontend
from tests.converters.ops import harness as H

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
CONVERT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
           "squeezenet", "vgg19", "zfnet512"]
FLOAT_MIN_DB = 60.0
INT8_STEPS = 2.0
INT8_LOGITS_MIN_DB = 3.0


@functools.lru_cache(maxsize=1)   # float and int8 of one model run back to back: load it once
def _model(name: str):
    m = frontend.load_model(os.path.join(LIGHT, f"light_{name}.onnx"))
    softmax = [n for n in m.graph.node if n.op_type == "Softmax"]
    if softmax:                        # the logits too: see the module docstring
        logits = softmax[-1].input[0]
        m.graph.output.append(next(v for v in m.graph.value_info if v.name == logits))
    samples = H.samples_for(m, 1, low=0.0, high=1.0)
    return m, samples, H.ort_run(m, samples[0])


@pytest.mark.parametrize("quantize", ["none", "int8"])
@pytest.mark.parametrize("name", CONVERT)
def test_light_model_converts_and_runs(name, quantize):
    m, samples, refs = _model(name)
    res = H.convert(m, quantize, samples=samples if quantize == "int8" else None)
    gots = H.tflite_run(res, samples[0])
    for ref, got in zip(refs, gots, strict=True):
        assert got.shape == ref.shape and np.all(np.isfinite(got))
    if quantize == "none":
        assert min(H.sqnr_db(r, g) for r, g in zip(refs, gots)) > FLOAT_MIN_DB
        return
    assert "QUANTIZE" in res.ops
    scale = H.output_scale(res) or 1.0 / 256          # SOFTMAX's int8 output scale (TFLite spec)
    err = float(np.abs(gots[0] - refs[0]).max()) / scale
    assert err <= INT8_STEPS, f"{name}: int8 output off by {err:.2f} steps of {scale:.3g}"
    if len(refs) > 1:
        assert H.sqnr_db(refs[1], gots[1]) > INT8_LOGITS_MIN_DB

