"""Synthetic data that looks natural enough for calibration: images, text crops, audio, tokens.

White noise is a poor stand-in for real inputs: its spectrum is flat, so every convolution sees
the same energy at every frequency, and ranges calibrated on it are not the ranges a camera or a
microphone produces. What this module makes instead (NumPy only, seeded):

    natural_images   1/f^alpha ("pink") noise, the amplitude spectrum of natural photographs,
                     with correlated colour channels, a lighting gradient and a few flat-coloured
                     shapes with hard edges (objects); values in [0, 1], NCHW float32
    text_lines       light background with dark glyph-like strokes along one line (OCR crops)
    text_pages       natural background with several text lines on light boxes (OCR detection)
    speech_audio     voiced bursts (harmonics under a syllable envelope) between pauses, plus noise
    token_ids        Zipf-distributed token ids with a [CLS] first token and padded tails
"""
from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def pink_noise(rng: np.random.Generator, channels: int, h: int, w: int, alpha: float) -> np.ndarray:
    """Gaussian noise whose amplitude spectrum falls as 1/f^alpha, normalised to zero mean, unit std."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=(channels, h, w // 2 + 1)) + 1j * rng.normal(size=(channels, h, w // 2 + 1)))
    img = np.fft.irfft2(spectrum / f ** alpha, s=(h, w))
    img -= img.mean(axis=(1, 2), keepdims=True)
    return img / (img.std(axis=(1, 2), keepdims=True) + 1e-8)


def _shape_mask(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(0.05, 0.35) * h, rng.uniform(0.05, 0.35) * w
    if rng.random() < 0.5:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)


def natural_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One [3, h, w] image in [0, 1]."""
    luminance = pink_noise(rng, 1, h, w, rng.uniform(0.9, 1.6))
    chroma = pink_noise(rng, 2, h, w, rng.uniform(1.4, 2.0)) * 0.35
    mix = np.array([[1, 0.6, 0.2], [1, -0.3, -0.5], [1, -0.4, 0.7]], np.float64)
    img = np.tensordot(mix, np.concatenate([luminance, chroma]), axes=1)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    img += rng.uniform(0.5, 2.0) * (np.cos(angle) * xx + np.sin(angle) * yy)[None]
    img = img * rng.uniform(0.12, 0.25) + rng.uniform(0.3, 0.6)
    for _ in range(rng.integers(1, 6)):
        mask = _shape_mask(rng, h, w)
        colour = rng.uniform(0, 1, size=(3, 1))
        img[:, mask] = 0.25 * img[:, mask] + 0.75 * colour
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def natural_images(rng: np.random.Generator, n: int, h: int, w: int, *, imagenet: bool = True) -> np.ndarray:
    """[n, 3, h, w] float32; ImageNet mean/std normalised when ``imagenet`` (torchvision models)."""
    batch = np.stack([natural_image(rng, h, w) for _ in range(n)])
    return ((batch - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32) if imagenet else batch


def _glyph_line(rng, canvas: np.ndarray, top: int, height: int, left: int, right: int) -> None:
    """Dark strokes of glyph width along one text line of ``canvas`` [h, w] (in place)."""
    x = left
    ink = rng.uniform(0.0, 0.3)
    while x < right - 2:
        glyph_w = int(rng.integers(max(2, height // 3), max(3, height)))
        if rng.random() < 0.15:                         # a space between words
            x += glyph_w
            continue
        for _ in range(rng.integers(1, 4)):             # a glyph: a few strokes
            if rng.random() < 0.5:                      # vertical stroke
                sx = x + int(rng.integers(0, max(1, glyph_w - 1)))
                sy = top + int(rng.integers(0, max(1, height // 3)))
                canvas[sy:top + height - int(rng.integers(0, max(1, height // 4))), sx:sx + max(1, height // 8)] = ink
            else:                                       # horizontal stroke
                sy = top + int(rng.integers(0, height))
                canvas[sy:sy + max(1, height // 8), x:x + glyph_w - 1] = ink
        x += glyph_w + int(rng.integers(1, max(2, height // 5)))


def _blur(img: np.ndarray) -> np.ndarray:
    """A light 3x3 box blur along the last two axes (anti-aliasing of the strokes)."""
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    h, w = img.shape[-2:]
    return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def text_lines(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """[n, 3, h, w] text-line crops normalised to [-1, 1] (the PaddleOCR convention)."""
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        canvas = np.full((h, w), rng.uniform(0.7, 1.0))
        glyph_h = int(h * rng.uniform(0.5, 0.8))
        top = int(rng.integers(0, h - glyph_h + 1))
        _glyph_line(rng, canvas, top, glyph_h, int(rng.integers(0, w // 8)), w - int(rng.integers(0, w // 4)))
        tint = rng.uniform(0.85, 1.0, size=(3, 1, 1))
        img = _blur(canvas[None] * tint) + 0.03 * pink_noise(rng, 3, h, w, 1.2)
        out[i] = (np.clip(img, 0, 1) - 0.5) / 0.5
    return out


def text_pages(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """[n, 3, h, w] scenes with text lines on light boxes, ImageNet-normalised (DBNet input)."""
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        img = natural_image(rng, h, w)
        for _ in range(rng.integers(3, 10)):
            line_h = int(rng.integers(max(8, h // 40), max(9, h // 12)))
            top = int(rng.integers(0, h - line_h - 4))
            left = int(rng.integers(0, w // 2))
            right = min(w, left + int(rng.integers(w // 6, w // 2)))
            box = np.full((line_h + 4, right - left), rng.uniform(0.75, 1.0))
            _glyph_line(rng, box, 2, line_h, 0, right - left)
            img[:, top:top + line_h + 4, left:right] = box[None]
        out[i] = _blur(img)
    return ((out - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def speech_audio(rng: np.random.Generator, samples: int, rate: int = 16000) -> np.ndarray:
    """[samples] float32 audio in [-1, 1]: syllable-like voiced bursts, pauses, background noise."""
    t = np.arange(samples) / rate
    audio = 0.003 * rng.normal(size=samples)
    start = int(rng.integers(0, rate // 4))
    while start < samples:
        length = int(rng.uniform(0.1, 0.35) * rate)
        seg = slice(start, min(samples, start + length))
        n = seg.stop - seg.start
        f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(2, 6) * t[seg]))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k ** rng.uniform(0.8, 1.5) for k in range(1, 12))
        envelope = np.sin(np.pi * np.linspace(0, 1, n)) ** 2
        audio[seg] += rng.uniform(0.05, 0.5) * envelope * voiced / 3
        gap = int(rng.uniform(0.03, 0.6) * rate) if rng.random() < 0.6 else int(rng.uniform(0.6, 1.5) * rate)
        start += length + gap
    return np.clip(audio, -1, 1).astype(np.float32)


def token_ids(rng: np.random.Generator, n: int, seq: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both [n, seq] int64: [CLS]=101, Zipf body, [SEP]=102, padding 0."""
    ids = np.zeros((n, seq), np.int64)
    mask = np.zeros((n, seq), np.int64)
    for i in range(n):
        length = int(rng.integers(seq // 4, seq + 1))
        body = np.minimum(rng.zipf(1.3, size=length - 2) + 999, vocab - 1)
        ids[i, :length] = [101, *body, 102]
        mask[i, :length] = 1
    return ids, mask
