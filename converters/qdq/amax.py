"""Per-tensor symmetric ranges for the tensorrt profile: the |x| clip with the least int8 error.

TensorRT takes only symmetric int8 activations (zero point 0, scale = amax / 127). A min/max
amax spends the 256 levels on the widest value seen, and a one-sided tensor (after ReLU, SiLU,
sigmoid: the input of most Convs) uses only the 128 levels of its own sign: each step is twice
the asymmetric one. TensorRT's own calibrators do not take min/max either: they choose amax per
tensor from a histogram of |x| (entropy, percentile). Here the amax with the least weighted
squared error:

    err(a) = CLIP_WEIGHT * sum over |x| > a of (|x| - a)^2   +   count(|x| <= a) * (a / 127)^2 / 12
             (clipping: a systematic error)                     (rounding: zero-mean noise)

over the calibration samples (a ``RunningHistogram`` per tensor, one streamed onnxruntime run of
the float model, at most ``MAX_SAMPLES`` samples). Clipping is weighted up because it is not
noise: it always pulls the largest activations the same way, and the next layer adds those
errors up where it averages rounding noise out. Measured on the zoo (tensorrt profile, holdout
SQNR; bench/zoo_bench.py): CLIP_WEIGHT 1 (plain MSE) / 4 / 16 gave DBNet 21.9 / 22.5 / 22.2 dB,
EfficientNet-B0 8.3 / 9.2 / 10.0, YOLOv8n-320 17.5 / 17.5 / 17.3, ResNet-18 28.2 / 28.4 / -;
min/max: 20.4, 8.6, 16.7. Only the tensors the profile quantizes (the inputs of weighted ops) are
observed; a tensor the data never reaches keeps its shared range.
"""
from __future__ import annotations

import numpy as np
import onnx

from converters.calibrate.observers import RunningHistogram
from converters.calibrate.runner import check_feeds, expose, make_session, value_types

# Each sample is a full float run. Fewer hurt: with 16 of the zoo's 32 samples EfficientNet-B0
# fell from 9.2 to 6.5 dB and ResNet-18 from 28.4 to 26.3 (the tails the clip is chosen from).
MAX_SAMPLES = 32
CANDIDATES = 128
LEVELS = 127                # int8 steps on each side of 0
CLIP_WEIGHT = 4.0           # see module doc


def choose(model: onnx.ModelProto, names: list[str], samples: list[dict]) -> dict[str, float]:
    """{tensor: amax} for the float tensors ``names`` of ``model`` (see module doc)."""
    found = histograms(model, names, samples)
    return {name: amax for name, h in found.items() if (amax := best_amax(h)) is not None}


def histograms(model: onnx.ModelProto, names: list[str], samples: list[dict]) -> dict[str, RunningHistogram]:
    """One ``RunningHistogram`` per tensor of ``names`` over (up to ``MAX_SAMPLES``) ``samples``."""
    types = value_types(model)
    inputs = {vi.name for vi in model.graph.input}
    names = [n for n in names if n in types]
    produced = [n for n in names if n not in inputs]
    session = make_session(expose(model, produced, types)) if produced else None
    found = {name: RunningHistogram() for name in names}
    input_names = [vi.name for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    for index, sample in enumerate(samples[:MAX_SAMPLES]):
        feeds = check_feeds(sample, session, index, input_names) if session else sample
        values = dict(zip(produced, session.run(produced, feeds))) if session else {}
        values.update({n: feeds[n] for n in names if n in inputs})
        for name, value in values.items():
            found[name].update(value)
        del values
    return found


def best_amax(h: RunningHistogram) -> float | None:
    """The least-error symmetric amax of ``h`` (None when it saw nothing but zeros)."""
    if not h.seen or h.radius == 0.0:
        return None
    counts, width = h.abs_counts()
    top = max(-h.lo, h.hi)
    if top <= 0.0:
        return None
    mask = counts > 0
    x = (np.nonzero(mask)[0] + 0.5) * width
    n = counts[mask].astype(np.float64)
    coarse = _best(x, n, np.linspace(top / CANDIDATES, top, CANDIDATES))
    step = top / CANDIDATES
    return _best(x, n, np.clip(np.linspace(coarse - step, coarse + step, 33), step / 4, top))


def _best(x: np.ndarray, n: np.ndarray, amaxes: np.ndarray) -> float:
    a = amaxes[:, None]
    over = np.maximum(x[None, :] - a, 0.0)
    inside = (x[None, :] <= a)
    err = CLIP_WEIGHT * (n * over ** 2).sum(axis=1) + (n * inside).sum(axis=1) * (amaxes / LEVELS) ** 2 / 12.0
    return float(amaxes[int(np.argmin(err))])
