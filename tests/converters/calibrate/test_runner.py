"""The calibration pass's own memory (calibrate/runner.py): what ``auto`` keeps to score on."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import onnx
from onnx import helper, numpy_helper

from converters.calibrate import collect_ranges, runner, select
from tests.converters.ops import harness as H
from tests.converters.calibrate.test_select import mlp, outlier_batches


class _Lazy(Sequence):
    """A re-iterable source that counts its reads, as calibrate/samples.py's Samples is."""

    def __init__(self, items, reads):
        self.items, self.reads = items, reads

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return _Lazy(self.items[index], self.reads)
        return self.items[index]

    def __iter__(self):
        for item in self.items:
            self.reads.append(1)
            yield dict(item)


def test_auto_reads_its_scoring_feeds_again_from_a_lazy_source():
    m = mlp(rows=256)
    calib = outlier_batches(40, 6, True)
    reads = []
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    _, kept, _ = runner.observe(m, _Lazy(calib, reads), "auto", types, inputs, produced, False)
    assert len(reads) == 40 and len(kept) == select.EVAL_SAMPLES
    assert not isinstance(kept.feeds, list)                 # a view, not the arrays
    feeds = [f for f, _ in kept]
    assert len(reads) == 40 + select.EVAL_SAMPLES
    assert all(np.array_equal(f["x"], c["x"]) for f, c in zip(feeds, calib))
    assert collect_ranges(m, _Lazy(calib, []), method="auto", progress=False) == \
        collect_ranges(m, calib, method="auto", progress=False)


def test_auto_spills_the_reference_outputs_and_reads_them_back():
    m = mlp(rows=256)
    calib = outlier_batches(12, 6, False)
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    _, kept, _ = runner.observe(m, calib, "auto", types, inputs, produced, False)
    assert not isinstance(kept.references, list) and kept.references.end > 0       # on disk, not held
    finals = [o.name for o in m.graph.output]
    for (feeds, refs), sample in zip(kept, calib):
        np.testing.assert_array_equal(refs[0], runner.make_session(m).run(finals, sample)[0])
    kept.close()


def _wide_channel_layer(op: str):
    """One layer whose two output channels' weights differ 1000x in size (as activation
    equalization or a depthwise stem leaves them): per-tensor int8 rounds the small one to 0."""
    rng = np.random.default_rng(5)
    if op == "Conv":
        w = rng.uniform(-1, 1, (2, 3, 3, 3)).astype(np.float32) * np.array([0.01, 10.0], np.float32)[:, None, None, None]
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
        return H.model([node], {"x": (1, 3, 6, 6)}, ["y"], {"w": w, "b": np.array([0.02, 5.0], np.float32)})
    w = rng.uniform(-1, 1, (2, 8)).astype(np.float32) * np.array([0.01, 10.0], np.float32)[:, None]
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    return H.model([node], {"x": (1, 8)}, ["y"], {"w": w, "b": np.array([0.02, 5.0], np.float32)})


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_the_fake_quant_session_rounds_weights_per_channel(op):
    """``auto``'s fake-quant graph (Q/DQ on activations, weights rounded per channel as the int8
    TFLite rounds them) runs in a ``make_session`` session. onnxruntime's WeightBiasQuantization
    re-quantized a weight behind a DequantizeLinear per tensor: the small channel's output was
    its bias alone, and ``auto`` scored a model LiteRT never runs (silero VAD: 8 dB, not 24)."""
    m = _wide_channel_layer(op)
    fq = runner.make_session(select.fake_quant_model(m, ["x", "y"]), qdq=True)
    # the rewrite needs the layer between two Q/DQ pairs; y's range fits the small channel (the
    # large one clips, in both): per-tensor weights would cost it ~40 of y's steps
    ranges = {"x": (-2.0, 2.0), "y": (-1.0, 1.0)}
    params = {}
    for name, rng in ranges.items():
        scale, zero = select.int8_params(*rng)
        params.update({f"{name}::s": np.array(scale, np.float32), f"{name}::z": np.array(zero, np.int8)})
    rounded = onnx.ModelProto()
    rounded.CopyFrom(m)
    w = numpy_helper.to_array(rounded.graph.initializer[0])
    step = (np.abs(w).reshape(2, -1).max(axis=1) / 127.0).reshape(-1, *[1] * (w.ndim - 1))
    rounded.graph.initializer[0].CopyFrom(numpy_helper.from_array((np.round(w / step) * step).astype(np.float32), "w"))
    for feeds in H.samples_for(m, 4, seed=2):
        want = _fake_quant(H.ort_run(rounded, {"x": _fake_quant(feeds["x"], ranges["x"])})[0], ranges["y"])
        got = fq.run(None, {**feeds, **params})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)


def _fake_quant(v: np.ndarray, rng: tuple) -> np.ndarray:
    scale, zero = select.int8_params(*rng)
    return ((np.clip(np.round(v / scale) + zero, -128, 127) - zero) * scale).astype(np.float32)
