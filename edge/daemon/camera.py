"""The camera source: frames from OpenCV (the ``camera`` extra), newest first.

A camera is a live source: when the request queue is full the oldest queued frame is dropped and
counted (``Daemon.submit(..., live=True)``), since a stale frame is worth less than a fresh one.
"""
from __future__ import annotations

import threading
import time

from edge.errors import InputError, UsageError


class CameraSource:
    """Frames from OpenCV (``camera`` extra); a full queue drops the oldest frame and counts it."""
    kind = "camera"

    def __init__(self, daemon, device: str | int = 0, fps: float = 0.0):
        try:
            import cv2
        except ImportError as exc:
            raise UsageError("the camera source needs OpenCV", code="usage.camera_extra",
                             hint="pip install 'ganglion-edge[camera]'") from exc
        self.cv2, self.daemon, self.fps = cv2, daemon, fps
        self.device = int(device) if str(device).isdigit() else device
        self.name = f"camera:{device}"

    def run(self, stop: threading.Event) -> None:
        cap = self.cv2.VideoCapture(self.device)
        if not cap.isOpened():
            raise InputError(f"cannot open camera {self.device}", code="input.camera")
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    raise InputError("camera stopped delivering frames", code="input.camera")
                rgb = frame[..., ::-1]
                self.daemon.submit(self.name, rgb, {"ts": time.time()}, None, live=True)
                if self.fps > 0:
                    stop.wait(1.0 / self.fps)
        finally:
            cap.release()
