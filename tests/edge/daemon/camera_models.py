"""Stand-ins for image models in the camera tests, and the video files they watch.

Frames carry their number in their pixels: red = 16 + 8 * (n % 28), green 200, blue 40 (values
8 apart survive MJPG's chroma rounding, which moves a flat colour by up to ~3). A model that
returns the mean of each input channel therefore tells the test which frame it saw, and in which
channel order.
"""
from __future__ import annotations

import time

import numpy as np

from edge.backends import MemoryBackend, TensorSpec

GREEN, BLUE, PERIOD = 200, 40, 28


def red_of(n: int) -> int:
    return 16 + 8 * (n % PERIOD)


def frame_of(red: float, near: int) -> int | None:
    """The frame number (the one closest to ``near``) whose red value is ``red``, if any."""
    step = (red - 16) / 8
    k = round(step)
    if abs(step - k) > 0.45 or not 0 <= k < PERIOD:
        return None
    base = near - near % PERIOD
    return min((base + k - PERIOD, base + k, base + k + PERIOD), key=lambda n: abs(n - near))


def write_video(path, frames: int, fps: float, size=(32, 24)) -> str:
    """An MJPG .avi of ``frames`` flat BGR frames numbered as above (OpenCV's own encoder)."""
    import cv2
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG here")
    for n in range(frames):
        bgr = np.empty((h, w, 3), np.uint8)
        bgr[..., 0], bgr[..., 1], bgr[..., 2] = BLUE, GREEN, red_of(n)
        writer.write(bgr)
    writer.release()
    return str(path)


def channel_means(delay_s: float = 0.0):
    """[N, 3, 8, 8] float -> the mean of each channel in pixel units ([N, 3]); optionally slow.
    Its manifest asks for no normalisation (scale 1), so outputs are the pixel values it saw."""
    def fn(f):
        if delay_s:
            time.sleep(delay_s)
        return {"y": f["x"].mean(axis=(2, 3))}
    backend = MemoryBackend([TensorSpec("x", "float32", (-1, 3, 8, 8))], [TensorSpec("y", "float32", (-1, 3))], fn)
    backend.manifest = {"preprocessing": {"scale": 1.0}}
    return backend
