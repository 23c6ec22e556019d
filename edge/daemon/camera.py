"""The camera source: frames from OpenCV (the ``camera`` extra) into the daemon, freshest first.

What ``device`` may be, and what each kind does when it runs out of frames:

    0, 1, ...          a camera index (V4L2 on Linux)          live
    /dev/video0        a device node                           live
    rtsp://, http://   a network stream (OpenCV's FFmpeg)      live
    clip.avi           a video file (anything FFmpeg reads)    finite: played at its own frame rate

Live sources submit with ``live=True``: when the request queue is full the oldest queued frame
is dropped and counted (metrics ``dropped``), since a stale frame is worth less than a fresh one.
With ``fps`` set, a live source still grabs every frame but decodes and submits only ``fps`` of
them per second: a camera's driver keeps a few buffers, and a source that read slower than the
camera would be handed frames from the past.

A live source that stops delivering frames (for a network stream: nothing for
``STREAM_TIMEOUT_S``) raises ``CameraError``: the sources supervisor
restarts it (a new capture is the usual cure for a wedged USB or RTSP stream), within its
restart intensity. A camera that cannot be opened is not a crash loop: the source reports
``camera_unavailable`` once (the error names the device and says what to check), retries with a
growing delay (0.5 s to 30 s) and reports ``camera_recovered`` when it opens, so an unplugged
camera neither takes the daemon down nor floods the event stream.

A file is played once at its recorded frame rate (``fps`` overrides it), as if it were the
camera it was recorded with, then reports ``source_ended`` and stays idle; with ``loop = true``
it starts over (results carry ``"loop": N``). A file that cannot be read is reported once as
``source_failed``: restarting would not make it readable.

Frames are converted from OpenCV's BGR to RGB here, once; resizing, layout and normalisation
follow the manifest's ``preprocessing`` block in ``edge.preprocess`` (``Daemon.submit`` ->
``decode.frame_feeds``), so a camera frame reaches the model exactly like a decoded PNG would.
Results carry ``"frame"`` (the frame's number since the source opened; for a file, its position)
and ``"ts"`` (capture time).
"""
from __future__ import annotations

import os
import re
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from core.errors import InputError, UsageError

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0
# A network stream that does not answer, or stops sending mid-stream, is noticed after this long
# (FFmpeg's own default is 30 s, during which the source could not even see a stop request).
STREAM_TIMEOUT_S = 5.0
# Codes of a model that cannot take a frame at all: every frame would fail the same way.
UNFIT_CODES = frozenset({"input.not_image", "input.ambiguous"})


class CameraError(InputError):
    """A camera or video that cannot be opened or read; ``where`` names the device."""
    code = "input.camera"


def parse_device(device) -> int | str:
    """``"0"`` -> 0 (an index); anything else stays a path or URL."""
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def is_stream_url(device) -> bool:
    return isinstance(device, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", device) is not None


def redact(device) -> str:
    """The device as it may appear in results and events: no password from an RTSP URL."""
    if not is_stream_url(device):
        return str(device)
    parts = urlsplit(device)
    if parts.password is None:
        return device
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_hint(device) -> str:
    """What to check when ``device`` cannot be opened, by kind of device."""
    if isinstance(device, int):
        return (f"is a camera at index {device}? list them with 'v4l2-ctl --list-devices' or 'ls /dev/video*'; "
                f"the daemon's user needs read access to /dev/video{device} (group 'video')")
    if is_stream_url(device):
        return "check the URL, its credentials and the network; OpenCV reads rtsp:// and http:// through FFmpeg"
    if device.startswith("/dev/"):
        return f"check that {device} exists and that the daemon's user may read it (group 'video')"
    return "the file exists but OpenCV cannot decode it: check the container and codec (ffprobe shows them)"


def open_capture(cv2, device):
    """A ``cv2.VideoCapture`` that is open, or ``CameraError`` naming the device and a hint."""
    if is_stream_url(device):
        ms = int(STREAM_TIMEOUT_S * 1000)
        cap = cv2.VideoCapture(device, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        cap.release()
        kind = "camera" if isinstance(device, int) or str(device).startswith("/dev/") else "video"
        raise CameraError(f"cannot open {kind} {redact(device)}", where=redact(device),
                          hint=open_hint(device))
    return cap


def to_rgb(cv2, frame):
    """OpenCV's BGR (or gray, or BGRA) frame -> a contiguous HxWx3 RGB uint8 array."""
    if frame.ndim == 2 or frame.shape[-1] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[-1] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class CameraSource:
    """A camera, a stream or a video file as a daemon source (see the module docstring)."""
    kind = "camera"

    def __init__(self, daemon, device: str | int = 0, fps: float = 0.0, loop: bool = False):
        try:
            import cv2        # optional: the [camera] extra
        except ImportError as exc:
            raise UsageError("the camera source needs OpenCV", code="usage.camera_extra",
                             hint="pip install 'ganglion-edge[camera]'") from exc
        self.cv2, self.daemon, self.fps, self.loop = cv2, daemon, float(fps), bool(loop)
        self.device = parse_device(device)
        self.is_file = isinstance(self.device, str) and not is_stream_url(self.device) \
            and not self.device.startswith("/dev/")
        if self.is_file and not os.path.isfile(self.device):
            # A typo in a file name is a configuration error: say so at start, not as a retry loop.
            raise UsageError(f"camera source: no such video file {self.device}", where=self.device,
                             code="usage.source", hint="give a camera index, a /dev/video* node, "
                             "an rtsp:// or http:// URL, or an existing video file")
        self.name = f"camera:{redact(self.device)}"
        self._unfit = threading.Event()

    # -- the thread ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        cap = self._open(stop)
        if cap is None:
            return
        try:
            if self.is_file:
                self._play(cap, stop)
            else:
                self._stream(cap, stop)
        finally:
            self._cap.release()

    def _open(self, stop: threading.Event):
        delay, reported = RETRY_FIRST_S, False
        while not stop.is_set():
            try:
                self._cap = open_capture(self.cv2, self.device)
            except CameraError as exc:
                if self.is_file:          # an unreadable file stays unreadable: report, idle
                    self._idle_after({"event": "source_failed", "source": self.name, "error": exc.to_dict()}, stop)
                    return None
                if not reported:
                    self.daemon.event({"event": "camera_unavailable", "source": self.name,
                                       "error": exc.to_dict(), "retry_s": delay})
                    reported = True
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if reported:
                self.daemon.event({"event": "camera_recovered", "source": self.name})
            return self._cap
        return None

    def _stream(self, cap, stop: threading.Event) -> None:
        """A live camera or stream: grab every frame, submit the due ones, drop the oldest."""
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        due, frame_no = None, 0
        while not stop.is_set() and not self._unfit.is_set():
            if not cap.grab():
                raise CameraError(f"{redact(self.device)} stopped delivering frames", where=redact(self.device),
                                  hint="the source restarts with a new capture; check the cable, "
                                       "the stream and the camera's power")
            frame_no += 1
            now = time.monotonic()
            # A quarter period of slack: camera frames jitter, and a frame a hair early must not
            # make us wait a whole camera interval (15 fps from a 30 fps camera would become 10).
            if period and due is not None and now < due - period / 4:
                continue                   # grabbed, not decoded: keeps the driver's buffers fresh
            ok, frame = cap.retrieve()
            if not ok:
                raise CameraError(f"{redact(self.device)} delivered a frame that cannot be decoded",
                                  where=redact(self.device))
            self._submit(frame, {"frame": frame_no - 1})
            if period:                     # keep the phase; start over after falling behind
                due = now + period if due is None or now - due > period else due + period
        self._stop_if_unfit(stop)

    def _play(self, cap, stop: threading.Event) -> None:
        """A video file: its frames in order at its own rate (or ``fps``); then end or loop."""
        native = cap.get(self.cv2.CAP_PROP_FPS) or 0.0
        period = 1.0 / self.fps if self.fps > 0 else (1.0 / native if 0 < native < 1000 else 0.0)
        loops, frame_no, due = 0, 0, time.monotonic()
        while not stop.is_set() and not self._unfit.is_set():
            ok, frame = self._cap.read()
            if not ok:
                if not self.loop or frame_no == 0:     # an empty file would loop without a frame
                    self._idle_after({"event": "source_ended", "source": self.name, "frames": frame_no,
                                      "loops": loops}, stop)
                    return
                self._cap.release()
                self._cap = open_capture(self.cv2, self.device)   # reopening rewinds every container
                loops, frame_no = loops + 1, 0
                continue
            meta = {"frame": frame_no, **({"loop": loops} if self.loop else {})}
            self._submit(frame, meta)
            frame_no += 1
            if period:
                due += period
                # Behind schedule (a slow decoder, a busy machine): the late frame goes at once and
                # the schedule restarts from there, rather than bursting through every missed slot.
                due = max(due, time.monotonic())
                stop.wait(max(0.0, due - time.monotonic()))
        self._stop_if_unfit(stop)

    # -- helpers ------------------------------------------------------------------------------
    def _submit(self, frame, meta: dict) -> None:
        meta["ts"] = round(time.time(), 3)
        self.daemon.submit(self.name, to_rgb(self.cv2, frame), meta, self._check_fit, live=True)

    def _check_fit(self, result) -> None:
        """A model that cannot take images at all fails every frame the same way: stop after one."""
        if not result.ok and (result.error or {}).get("code") in UNFIT_CODES:
            self._unfit.set()

    def _stop_if_unfit(self, stop: threading.Event) -> None:
        if self._unfit.is_set():
            self._idle_after({"event": "source_failed", "source": self.name,
                              "error": {"code": "input.not_image", "message": "the model does not take "
                                        "camera frames (one rank-4 image input)", "where": self.name,
                                        "hint": "use a model with one [N, H, W, C] or [N, C, H, W] input"}}, stop)

    def _idle_after(self, event: dict, stop: threading.Event) -> None:
        """Report once, then wait for the daemon to stop: a permanent child that returned would be
        restarted and report the same thing again. The capture is let go first: an idle source
        must not hold the camera."""
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
        self.daemon.event(event)
        stop.wait()
