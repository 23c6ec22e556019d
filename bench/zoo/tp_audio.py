"""Speech-like audio for the third-party VAD models (bench/zoo/third_party.py), with labels.

An utterance is a run of syllables: a glottal pulse train (f0 90-260 Hz, jitter, a falling
intonation) through three formant resonators whose targets move between vowels, under a
syllable envelope; some syllables open with a fricative (high-passed noise burst). Pauses of
0.2-0.9 s separate words and phrases. Background noise (white, pink, low hum with harmonics,
babble-like filtered noise) is mixed at a chosen SNR. 16 kHz float32, samples labelled speech
(1) where a syllable's envelope is above 10% of its peak.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

SR = 16000
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (440, 1020, 2240), (660, 1720, 2410), (490, 1350, 1690)]      # Peterson & Barney averages


def resonator(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    """A two-pole formant filter at freq (Hz) with bandwidth bw (Hz)."""
    r = np.exp(-np.pi * bw / SR)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / SR), r * r]
    return lfilter([1 - r], a, x)


def syllable(rng: np.random.Generator, n: int, f0: float) -> np.ndarray:
    t = np.arange(n) / SR
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) * np.linspace(1.05, 0.92, n)
    phase = np.cumsum(pitch * (1 + rng.normal(0, 0.01, n)) / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0)            # one impulse per glottal period
    source = lfilter([1.0], [1, -0.97], pulses) + rng.normal(0, 0.02, n)     # spectral tilt + aspiration
    a, b = VOWELS[rng.integers(len(VOWELS))], VOWELS[rng.integers(len(VOWELS))]
    mix = np.linspace(0, 1, 4)
    out = np.zeros(n)
    for k, (fa, fb) in enumerate(zip(a, b)):               # formants glide from vowel a to b in 4 steps
        for i, m in enumerate(mix):
            seg = slice(i * n // 4, (i + 1) * n // 4)
            out[seg] += resonator(source, fa + (fb - fa) * m, 60 + 40 * k)[seg] / (k + 1)
    env = np.sin(np.pi * np.linspace(0, 1, n)) ** rng.uniform(0.6, 1.5)
    voiced = out * env
    if rng.random() < 0.35:                                 # a fricative onset
        m = int(n * rng.uniform(0.15, 0.3))
        noise = np.diff(rng.normal(0, 1, m + 1)) * np.hanning(m) * 0.3
        voiced[:m] += noise
    return voiced / (np.abs(voiced).max() + 1e-9)


def utterance(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Speech with pauses, total `seconds`; returns (audio in [-1, 1], per-sample speech label)."""
    total = int(seconds * SR)
    audio, label = np.zeros(total), np.zeros(total, np.uint8)
    pos = int(rng.uniform(0.1, 0.8) * SR)
    f0 = rng.uniform(90, 260)
    while pos < total - SR // 5:
        for _ in range(int(rng.integers(1, 6))):          # a word: 1-5 syllables
            n = int(rng.uniform(0.12, 0.28) * SR)
            if pos + n >= total:
                break
            s = syllable(rng, n, f0 * rng.uniform(0.9, 1.1)) * rng.uniform(0.3, 1.0)
            audio[pos:pos + n] += s
            env = np.convolve(np.abs(s), np.ones(160) / 160, "same")      # 10 ms smoothing
            label[pos:pos + n] = env > 0.1 * env.max()
            pos += n + int(rng.uniform(0.0, 0.06) * SR)
        pos += int(rng.uniform(0.2, 0.9) * SR)
    return audio * rng.uniform(0.1, 0.6), label


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.choice(["white", "pink", "hum", "babble"])
    if kind == "white":
        x = rng.normal(0, 1, n)
    elif kind == "pink":
        x = lfilter([0.049922, -0.095993, 0.050612, -0.004408], [1, -2.494956, 2.017265, -0.522189], rng.normal(0, 1, n))
    elif kind == "hum":
        t = np.arange(n) / SR
        x = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6)) + rng.normal(0, 0.1, n)
    else:                              # babble-like: speech-band noise with a slow random envelope
        x = resonator(rng.normal(0, 1, n), 500, 400) + resonator(rng.normal(0, 1, n), 1500, 800)
        x *= np.repeat(rng.uniform(0.3, 1, n // 1600 + 1), 1600)[:n]
    return x / (np.std(x) + 1e-9)


def clip(rng: np.random.Generator, seconds: float, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """An utterance in noise at snr_db (speech power over the voiced part / noise power)."""
    speech, label = utterance(rng, seconds)
    power = np.mean(speech[label > 0] ** 2) if label.any() else 1e-4
    mixed = speech + noise(rng, len(speech)) * np.sqrt(power / 10 ** (snr_db / 10))
    peak = np.abs(mixed).max()
    return (mixed / peak * min(peak, 0.95)).astype(np.float32), label


def fbank(audio: np.ndarray, n_mels: int = 80, frame: int = 400, shift: int = 160) -> np.ndarray:
    """Kaldi-style log mel filterbank [frames, n_mels] of 16 kHz audio scaled to int16 range, as
    FunASR's WavFrontend computes it: DC removed per frame, pre-emphasis 0.97, Hamming window,
    512-point power spectrum, mel = 1127 ln(1 + f / 700) triangles from 20 Hz to Nyquist."""
    x = audio.astype(np.float64) * 32768.0
    count = 1 + (len(x) - frame) // shift
    frames = np.stack([x[i * shift:i * shift + frame] for i in range(count)])
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1]
    frames[:, 0] *= 0.03
    power = np.abs(np.fft.rfft(frames * np.hamming(frame), 512)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)       # noqa: E731
    edges = np.linspace(mel(20.0), mel(SR / 2), n_mels + 2)
    bins = mel(np.arange(257) * SR / 512)
    weights = np.maximum(0, np.minimum((bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                                       (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])))
    return np.log(np.maximum(power @ weights.T, np.finfo(np.float32).eps)).astype(np.float32)


def lfr(feats: np.ndarray, m: int = 5) -> np.ndarray:
    """Low frame rate stacking (FunASR lfr_m=m, lfr_n=1): each frame with the next m - 1, the first
    frame repeated (m - 1) // 2 times in front and the last at the end."""
    pad = (m - 1) // 2
    padded = np.concatenate([np.repeat(feats[:1], pad, 0), feats, np.repeat(feats[-1:], m, 0)])
    return np.stack([padded[i:i + m].reshape(-1) for i in range(len(feats))])
