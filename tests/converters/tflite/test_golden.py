"""Readable goldens of what the backend emits for the example CNNs: one op per line with its
input/output dtypes and shapes. A diff in review shows exactly which op, layout or dtype changed.

Regenerate after an intended change with: GANGLION_UPDATE_GOLDENS=1 pytest tests/converters/tflite/test_golden.py
"""
import os
from pathlib import Path

import numpy as np
import pytest

from converters import frontend, tflite
from converters.calibrate import collect_ranges
from core.litert import make_interpreter

GOLDENS = Path(__file__).parents[1] / "ops" / "goldens"


def describe(result) -> str:
    interp = make_interpreter(result.flatbuffer, use_xnnpack=False)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}

    def fmt(i):
        d = tensors[i]
        return f"{np.dtype(d['dtype']).name}{[int(s) for s in d['shape']]}"

    lines = []
    for op in interp._get_ops_details():
        ins = ", ".join(fmt(i) for i in op["inputs"] if i >= 0)
        outs = ", ".join(fmt(i) for i in op["outputs"])
        lines.append(f"{op['op_name']}({ins}) -> {outs}")
    return "\n".join(lines) + "\n"


def _model(name):
    from examples.models import mobilenet_v2, resnet_tiny
    module = {"mobilenet_v2": mobilenet_v2, "resnet_tiny": resnet_tiny}[name]
    return frontend.prepare(module.build_small() if hasattr(module, "build_small") else module.build())


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet_tiny"])
@pytest.mark.parametrize("mode", ["none", "int8"])
def test_golden_op_list(name, mode):
    m = _model(name)
    ranges = None
    if mode == "int8":
        shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        rng = np.random.default_rng(0)
        samples = [{m.graph.input[0].name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(4)]
        ranges = collect_ranges(m, samples, method="minmax", progress=False)
    text = describe(tflite.build(m, ranges, tflite.TFLiteOptions(quantize=mode)))
    path = GOLDENS / f"{name}_{mode}.txt"
    if os.environ.get("GANGLION_UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with GANGLION_UPDATE_GOLDENS=1"
    assert text == path.read_text()
