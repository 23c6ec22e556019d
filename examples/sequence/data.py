"""The synthetic waveform task of the sequence examples (NumPy only, so tests can rebuild it).

5 classes -- sine, square, sawtooth, triangle, noise -- with a random frequency (1.5-5 cycles per
window), phase, amplitude (0.5-1.5) and additive Gaussian noise (sigma 0.15-0.45); 64 samples per
sequence, fed as T=32 steps of 2 samples ([N, 32, 2] float32).
"""
from __future__ import annotations

import numpy as np

STEPS, FEATURES, CLASSES = 32, 2, ("sine", "square", "sawtooth", "triangle", "noise")


def waveforms(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, STEPS * FEATURES, endpoint=False)
    labels = rng.integers(0, len(CLASSES), n)
    x = np.empty((n, STEPS * FEATURES), np.float32)
    for k, label in enumerate(labels):
        phase = 2 * np.pi * (rng.uniform(1.5, 5.0) * t + rng.uniform())
        frac = (phase / (2 * np.pi)) % 1.0
        wave = [np.sin(phase), np.sign(np.sin(phase)), 2 * frac - 1, 2 * np.abs(2 * frac - 1) - 1,
                rng.normal(0, 0.6, t.shape)][label]
        x[k] = rng.uniform(0.5, 1.5) * wave + rng.normal(0, rng.uniform(0.15, 0.45), t.shape)
    return x.reshape(n, STEPS, FEATURES), labels
