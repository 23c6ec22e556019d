"""The camera source with the real OpenCV: video files written by cv2.VideoWriter, read back by
cv2.VideoCapture through the source, then the live queue, worker processes and the JSONL sink.

Each frame's number is in its pixels (camera_models), so a result proves which frame the model
saw, that frames arrived in order, and in which channel order. No camera exists on this machine;
what only a camera can do (a V4L2 index) is covered by the open/hint checks.
"""
import json
import time

import cv2  # noqa: E402  (the dev extra installs opencv-python-headless: a missing one fails, never skips)
import numpy as np
import pytest

from core import artifact
from core.errors import UsageError
from edge.daemon import camera
from tests.edge.daemon import camera_models as cm
from tests.edge.daemon.helpers import make_daemon, sigterm, wait_for
pytestmark = pytest.mark.timeout(120)
TOL = 4.0          # MJPG moves a flat colour by up to ~3


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _events(outbox, name):
    return [e for e in outbox.of("events") if e["event"] == name]


def _run(daemon, until, timeout=20):
    daemon.start()
    try:
        assert wait_for(until, timeout=timeout)
    finally:
        daemon.stop()
        daemon.shutdown()


def _camera_daemon(tmp_path, video, *, delay_s=0.0, queue=64, fps=0.0, loop=False, model=None, **kw):
    out = tmp_path / "r.jsonl"
    source = {"kind": "camera", "path": str(video), "fps": fps, "loop": loop}
    if model is None:
        kw.update(factory="tests.edge.daemon.camera_models:channel_means", factory_args={"delay_s": delay_s})
    daemon, outbox = make_daemon(model or tmp_path / "unused.tflite", queue=queue, max_batch=1,
                                 sources=[source], sinks=[{"kind": "jsonl", "path": str(out)}], **kw)
    return daemon, outbox, out


def _means_gpk(path, channels: str):
    """A real ONNX model in a real .gpk: NHWC [N, 8, 8, 3] -> mean per channel, run by ONNX Runtime
    in the worker; its manifest resizes to 8x8, keeps pixel units and names the channel order."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], "means",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    manifest = {"name": "means", "version": "1", "models": [{"format": "onnx", "file": "model.qdq.onnx"}],
                "preprocessing": {"size": [8, 8], "scale": 1.0, "channels": channels, "layout": "NHWC"}}
    artifact.write(path, manifest, {"model.qdq.onnx": model.SerializeToString()})
    return path


@pytest.mark.parametrize("channels", ["RGB", "BGR"])
def test_file_frames_reach_the_model_in_order_in_the_manifests_channel_order(tmp_path, channels):
    """OpenCV hands over BGR; the source makes it RGB, and the manifest's preprocessing (resize to
    8x8, NHWC, channel order) does the rest: the model sees red first unless it asked for BGR."""
    video = cm.write_video(tmp_path / "clip.avi", frames=20, fps=50)
    model = _means_gpk(tmp_path / "means.gpk", channels)
    daemon, outbox, out = _camera_daemon(tmp_path, video, model=model)
    _run(daemon, lambda: len(_lines(out)) == 20 and _events(outbox, "source_ended"))
    recs = _lines(out)
    assert [r["frame"] for r in recs] == list(range(20))
    assert all(r["ok"] and r["source"] == f"camera:{video}" for r in recs)
    seen = np.array([r["outputs"]["y"] for r in recs])
    want = np.array([[cm.red_of(n), cm.GREEN, cm.BLUE] for n in range(20)], np.float32)
    if channels == "BGR":
        want = want[:, ::-1]
    np.testing.assert_allclose(seen, want, atol=TOL)
    assert _events(outbox, "source_ended") == [{**_events(outbox, "source_ended")[0],
                                                 "source": f"camera:{video}", "frames": 20, "loops": 0}]
    assert not _events(outbox, "restart") and not _events(outbox, "crash")
    assert daemon.metrics.totals["dropped"] == 0


def test_a_slow_model_gets_the_freshest_frames_and_the_dropped_ones_are_counted(tmp_path):
    """100 frames/s into a model that needs 50 ms: the live queue (2 places) drops the oldest.
    Every frame is either answered or counted as dropped; what is answered is in order, the
    pixels match the frame number, and the last frame (the freshest) is never the one dropped."""
    video = cm.write_video(tmp_path / "fast.avi", frames=60, fps=100)
    daemon, outbox, out = _camera_daemon(tmp_path, video, delay_s=0.05, queue=2)
    _run(daemon, lambda: _events(outbox, "source_ended")
         and len(_lines(out)) + daemon.metrics.totals["dropped"] == 60)
    recs, dropped = _lines(out), daemon.metrics.totals["dropped"]
    frames = [r["frame"] for r in recs]
    assert dropped >= 20 and len(recs) >= 5
    assert len(recs) + dropped == 60
    assert frames == sorted(frames) and len(set(frames)) == len(frames) and frames[-1] == 59
    for r in recs:
        red, green, blue = r["outputs"]["y"]
        assert cm.frame_of(red, r["frame"]) == r["frame"]
        assert abs(green - cm.GREEN) < TOL and abs(blue - cm.BLUE) < TOL
    assert daemon.metrics.snapshot()["total_dropped"] == dropped


def test_fps_paces_a_file_and_loop_starts_it_over(tmp_path):
    """`loop = true`: after the last frame the file starts again (results say which pass);
    no source_ended event, since the source has not ended. `fps` sets the rate."""
    video = cm.write_video(tmp_path / "short.avi", frames=6, fps=1000)
    daemon, outbox, out = _camera_daemon(tmp_path, video, fps=60, loop=True)
    started = time.monotonic()
    _run(daemon, lambda: len(_lines(out)) >= 15)
    elapsed = time.monotonic() - started
    recs = _lines(out)[:15]
    assert [(r["loop"], r["frame"]) for r in recs] == [(i // 6, i % 6) for i in range(15)]
    for r in recs:
        assert cm.frame_of(r["outputs"]["y"][0], r["frame"]) == r["frame"]
    assert not _events(outbox, "source_ended")
    # 15 frames at 60/s take >= 0.23 s; unpaced, a 6-frame file decodes in ~1 ms. (A lower bound
    # only: this proves pacing happens, it does not time anything.)
    assert elapsed >= 14 / 60


def test_a_model_that_takes_no_images_stops_the_camera_after_one_answer(tmp_path, dense_tflite):
    video = cm.write_video(tmp_path / "clip.avi", frames=50, fps=200)
    daemon, outbox, out = _camera_daemon(tmp_path, video, model=dense_tflite)
    _run(daemon, lambda: _events(outbox, "source_failed"))
    time.sleep(0.2)
    errors = _lines(out)
    assert errors and all(r["error"]["code"] == "input.not_image" for r in errors)
    assert len(errors) < 50                           # not one error per frame of the file
    failed = _events(outbox, "source_failed")
    assert len(failed) == 1 and failed[0]["error"]["code"] == "input.not_image"


def test_an_unreadable_video_file_is_reported_once_and_the_daemon_carries_on(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"RIFF" + bytes(200))
    daemon, outbox, _ = _camera_daemon(tmp_path, bad)
    daemon.start()
    try:
        assert wait_for(lambda: _events(outbox, "source_failed"), timeout=10)
        time.sleep(0.3)
        assert not daemon.stop_event.is_set()
    finally:
        daemon.stop()
        daemon.shutdown()
    (failed,) = _events(outbox, "source_failed")
    assert failed["error"]["code"] == "input.camera" and str(bad) in failed["error"]["where"]
    assert "codec" in failed["error"]["hint"]
    assert not _events(outbox, "restart")


def test_a_camera_that_cannot_be_opened_is_reported_once_and_retried(tmp_path):
    """No such device node: one camera_unavailable event (device named, what to check), retries
    in the background, no crash loop, and the daemon keeps serving."""
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.camera_models:channel_means",
                                 sources=[{"kind": "camera", "device": "/dev/video-ganglion-none"}])
    daemon.start()
    try:
        assert wait_for(lambda: _events(outbox, "camera_unavailable"), timeout=10)
        time.sleep(1.2)                                  # a couple of retries (0.5 s, then 1 s)
        assert not daemon.stop_event.is_set()
    finally:
        daemon.stop()
        daemon.shutdown()
    (ev,) = _events(outbox, "camera_unavailable")
    assert ev["source"] == "camera:/dev/video-ganglion-none" and ev["retry_s"] == camera.RETRY_FIRST_S
    assert ev["error"]["code"] == "input.camera" and ev["error"]["where"] == "/dev/video-ganglion-none"
    assert "group 'video'" in ev["error"]["hint"]
    assert not _events(outbox, "crash") and not _events(outbox, "restart")


def test_open_errors_name_the_device_and_say_what_to_check():
    with pytest.raises(camera.CameraError) as info:
        camera.open_capture(cv2, 63)                     # an index no machine here has
    err = info.value
    assert err.code == "input.camera" and err.where == "63" and "cannot open camera 63" in err.message
    assert "v4l2-ctl --list-devices" in err.hint and "/dev/video63" in err.hint
    with pytest.raises(camera.CameraError) as info:
        camera.open_capture(cv2, "rtsp://admin:hunter2@127.0.0.1:1/stream")
    assert "hunter2" not in info.value.message + info.value.where
    assert info.value.where == "rtsp://admin:***@127.0.0.1:1/stream" and "URL" in info.value.hint


def test_devices_are_told_apart_and_a_missing_file_fails_at_start(tmp_path):
    assert camera.parse_device("0") == 0 and camera.parse_device(" 2 ") == 2
    assert camera.parse_device("/dev/video0") == "/dev/video0"
    assert camera.is_stream_url("rtsp://cam/1") and camera.is_stream_url("http://x/y.mjpg")
    assert not camera.is_stream_url("/srv/clip.avi")
    assert camera.redact("http://cam.local/mjpg") == "http://cam.local/mjpg"
    with pytest.raises(UsageError) as info:
        _camera_daemon(tmp_path, tmp_path / "no-such-clip.avi")
    assert info.value.code == "usage.source" and "no-such-clip.avi" in info.value.where


def test_frames_become_contiguous_rgb_whatever_opencv_hands_over():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 1                                     # blue in OpenCV's order
    rgb = camera.to_rgb(cv2, bgr)
    assert rgb.flags.c_contiguous and rgb[..., 2].min() == 1 and rgb[..., :2].max() == 0
    assert camera.to_rgb(cv2, np.full((2, 3), 7, np.uint8)).shape == (2, 3, 3)
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 2] = 9                                    # red
    assert camera.to_rgb(cv2, bgra)[..., 0].min() == 9


@pytest.fixture
def http_video(tmp_path):
    """A video served over loopback HTTP: OpenCV's FFmpeg reads it as a network stream, so the
    source treats it as live (like an IP camera), with no pacing and a restart when it ends."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    cm.write_video(tmp_path / "stream.avi", frames=30, fps=30)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.avi"
    server.shutdown()
    server.server_close()


def test_a_network_stream_is_live_and_restarted_by_its_supervisor_when_it_stops(tmp_path, http_video):
    out = tmp_path / "r.jsonl"
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.camera_models:channel_means",
                                 queue=64, max_batch=1, sources=[{"kind": "camera", "device": http_video}],
                                 sinks=[{"kind": "jsonl", "path": str(out)}])
    _run(daemon, lambda: len(_lines(out)) >= 30 and _events(outbox, "restart"))
    recs = _lines(out)
    first_pass = recs[:30]
    assert [r["frame"] for r in first_pass] == list(range(30))
    for r in first_pass:
        assert r["source"] == f"camera:{http_video}"
        assert cm.frame_of(r["outputs"]["y"][0], r["frame"]) == r["frame"]
    crash = _events(outbox, "crash")[0]
    assert crash["child"] == f"camera:{http_video}" and "stopped delivering frames" in crash["reason"]
    assert not _events(outbox, "source_ended")           # a stream that stops is a fault, not an end


class ClockCapture:
    """A camera that produces a frame every 1/256 s on a virtual clock (what no file or URL here can
    do: frames that arrive in real time whether or not anyone reads them). Unit test of the fps
    logic only; the clock is virtual so the test does not depend on the machine's load."""

    def __init__(self, frames: int, step: float = 1 / 256):
        self.left, self.grabbed, self.retrieved, self.now, self.step = frames, 0, 0, 1024.0, step

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    def grab(self):
        self.now += self.step                 # powers of two: exact in binary, no rounding in the schedule
        self.left -= 1
        self.grabbed += 1
        return self.left >= 0

    def retrieve(self):
        self.retrieved += 1
        return True, np.full((4, 4, 3), self.grabbed % 256, np.uint8)

    def release(self):
        pass


class Submits:
    """The daemon as the source sees it: ``submit`` and ``event``, recorded."""

    def __init__(self):
        self.got, self.events = [], []

    def submit(self, source, value, meta, on_done, live=False):
        self.got.append((meta["frame"], int(value[0, 0, 0]), live))

    def event(self, ev):
        self.events.append(ev)


def test_fps_on_a_live_camera_grabs_every_frame_but_submits_only_the_due_ones(monkeypatch):
    import threading
    daemon = Submits()
    src = camera.CameraSource(daemon, "rtsp://127.0.0.1:1/unused", fps=64)    # one frame per 4 camera frames
    cap = src._cap = ClockCapture(frames=100)
    monkeypatch.setattr(camera, "time", cap)
    with pytest.raises(camera.CameraError):                                  # the stream ends: a fault
        src._stream(cap, threading.Event())
    assert cap.grabbed == 101 and cap.retrieved == len(daemon.got)          # skipped frames are not decoded
    frames = [f for f, _, _ in daemon.got]
    assert frames[0] == 0 and frames[-1] >= 96 and 25 <= len(frames) <= 26
    assert {b - a for a, b in zip(frames, frames[1:])} <= {3, 4}              # 4, less a quarter of slack
    assert all(value == (frame + 1) % 256 and live for frame, value, live in daemon.got)


def test_fps_above_the_cameras_rate_submits_every_frame(monkeypatch):
    import threading
    daemon = Submits()
    src = camera.CameraSource(daemon, "/dev/video-unused", fps=64)
    cap = src._cap = ClockCapture(frames=40, step=1 / 32)                    # a 32 fps camera
    monkeypatch.setattr(camera, "time", cap)
    with pytest.raises(camera.CameraError):
        src._stream(cap, threading.Event())
    assert [f for f, _, _ in daemon.got] == list(range(40))


def test_ganglion_run_camera_plays_a_video_file_and_refuses_a_missing_one(tmp_path):
    """The command a user types: `ganglion run --camera FILE` (a real subprocess, SIGTERM to stop)."""
    import subprocess
    import sys
    from pathlib import Path
    ganglion = str(Path(sys.executable).parent / "ganglion")
    video = cm.write_video(tmp_path / "clip.avi", frames=8, fps=100)
    model = _means_gpk(tmp_path / "means.gpk", "RGB")
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([ganglion, "run", "--model", str(model), "--camera", video, "--jsonl", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(_lines(out)) == 8, timeout=30)
        time.sleep(0.5)                                  # the end of the file is read after frame 8
    finally:
        err = sigterm(proc)
    assert proc.returncode == 0, err
    assert [r["frame"] for r in _lines(out)] == list(range(8))
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("payload", e).get("event") == "source_ended" for e in events), err
    res = subprocess.run([ganglion, "run", "--model", str(model), "--camera", str(tmp_path / "nope.avi")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 78 and "error[usage.source]: camera source: no such video file" in res.stderr


def test_config_get_does_not_hand_out_a_camera_password(tmp_path):
    """`config.get` over MQTT returns the daemon's config; an RTSP URL's password stays on the device."""
    from edge.daemon.commands import config_get
    url = "rtsp://admin:hunter2@10.0.0.7:554/stream1"
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.camera_models:channel_means",
                            sources=[{"kind": "camera", "device": url}])
    assert daemon.sources[0].name == "camera:rtsp://admin:***@10.0.0.7:554/stream1"
    whole = json.dumps(config_get(daemon, {}))
    assert "hunter2" not in whole and "rtsp://admin:***@10.0.0.7:554/stream1" in whole
    assert config_get(daemon, {"key": "sources"})["value"][0]["device"] == "rtsp://admin:***@10.0.0.7:554/stream1"


def test_a_camera_without_opencv_is_a_clear_usage_error(monkeypatch):
    """A device installed without the camera extra (moved from test_commands, where it could only
    skip once OpenCV joined the dev extra): an import of cv2 that fails, as it does there."""
    from edge.daemon.sources import make_source
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)          # `import cv2` -> ImportError
    with pytest.raises(UsageError) as info:
        make_source("camera", object(), device="0")
    assert info.value.code == "usage.camera_extra" and "ganglion-edge[camera]" in info.value.hint


@pytest.fixture
def stalling_server(tmp_path):
    """A loopback HTTP 'camera' that sends the first third of a video and then goes silent with the
    connection open (a stream that hangs, not one that ends); ``.silent_url`` never answers at all."""
    import socket
    import threading
    data = open(cm.write_video(tmp_path / "long.avi", frames=200, fps=30), "rb").read()
    listeners, held, stop = [], [], threading.Event()

    def serve(sock, send):
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            if send:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/x-msvideo\r\n\r\n" + data[:len(data) // 3])

    urls = []
    for send in (True, False):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        listeners.append(sock)
        threading.Thread(target=serve, args=(sock, send), daemon=True).start()
        urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}/cam.avi")
    yield type("Server", (), {"stalling_url": urls[0], "silent_url": urls[1]})
    stop.set()
    for s in listeners + held:
        s.close()


def test_a_stream_that_hangs_is_noticed_after_the_stream_timeout(tmp_path, stalling_server, monkeypatch):
    monkeypatch.setattr(camera, "STREAM_TIMEOUT_S", 1.0)      # 5 s in production
    url = stalling_server.stalling_url
    out = tmp_path / "r.jsonl"
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.camera_models:channel_means",
                                 max_batch=1, sources=[{"kind": "camera", "device": url}],
                                 sinks=[{"kind": "jsonl", "path": str(out)}])
    started = time.monotonic()
    _run(daemon, lambda: _events(outbox, "crash"), timeout=15)
    noticed = time.monotonic() - started
    assert _lines(out), "frames before the stall were answered"
    crash = _events(outbox, "crash")[0]
    assert crash["child"] == f"camera:{url}" and "stopped delivering frames" in crash["reason"]
    assert noticed < 10                                       # not FFmpeg's default 30 s


def test_a_stream_that_never_answers_is_unavailable_not_a_hang(stalling_server, monkeypatch):
    monkeypatch.setattr(camera, "STREAM_TIMEOUT_S", 1.0)
    started = time.monotonic()
    with pytest.raises(camera.CameraError) as info:
        camera.open_capture(cv2, stalling_server.silent_url)
    assert time.monotonic() - started < 10
    assert info.value.where == stalling_server.silent_url and "URL" in info.value.hint
