"""What a camera frame costs before the model sees it: decode, BGR->RGB, preprocessing.

    .venv/bin/python bench/camera_bench.py                          # 640x480 -> 224x224, 200 frames
    .venv/bin/python bench/camera_bench.py --size 1280x720 --json /tmp/camera.json

A textured MJPG video (seeded noise over gradients, so JPEG decoding does real work) is written
to a temp folder, then each stage of the camera source's path is timed per frame, in this process,
in blocks that alternate between the stages (the machine is shared; alternation spreads its load
over all of them):

    decode       cv2.VideoCapture.read() of the next frame (MJPG decode)
    to_rgb       edge.daemon.camera.to_rgb (cv2.cvtColor BGR->RGB)
    preprocess   edge.daemon.decode.frame_feeds for a [1, 3, S, S] float32 input with the default
                 spec (Pillow bilinear resize, scale 1/255, NCHW): what Daemon.submit does per frame
    cv2_resize   for comparison only: cv2.resize + the same scaling and transpose. Not what the
                 daemon does: the converter calibrated with Pillow's resize, and a different
                 resampler moves the int8 ranges (docs/daemon.md, "Inputs and results")

It prints a table and JSON: median ms per frame, the frame rate each stage alone would allow, and
each stage's cost as a ratio of the decode.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from edge.backends.base import TensorSpec  # noqa: E402
from edge.daemon.camera import to_rgb  # noqa: E402
from edge.daemon.decode import frame_feeds  # noqa: E402


class Info:
    """The part of the daemon's ModelInfo that frame_feeds reads."""

    def __init__(self, side: int):
        self.inputs = [TensorSpec("x", "float32", (1, 3, side, side))]
        self.preprocess = {}


def write_video(path: str, frames: int, w: int, h: int) -> None:
    rng = np.random.default_rng(0)
    base = np.dstack([np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))] * 3)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for n in range(frames):
        noise = rng.normal(0, 25, (h, w, 3)).astype(np.float32)
        writer.write(np.clip(base + noise + n % 50, 0, 255).astype(np.uint8))
    writer.release()


def cv2_resize(rgb: np.ndarray, side: int) -> np.ndarray:
    small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None])


def measure(video: str, side: int, blocks: int, per_block: int) -> dict[str, list[float]]:
    info, times = Info(side), {"decode": [], "to_rgb": [], "preprocess": [], "cv2_resize": []}
    cap = cv2.VideoCapture(video)
    for _ in range(blocks):
        frames = []
        for _ in range(per_block):                      # decode, one frame at a time
            t = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                cap.release()
                cap = cv2.VideoCapture(video)
                ok, frame = cap.read()
            else:
                times["decode"].append(time.perf_counter() - t)
            frames.append(frame)
        rgbs = []
        for frame in frames:
            t = time.perf_counter()
            rgbs.append(to_rgb(cv2, frame))
            times["to_rgb"].append(time.perf_counter() - t)
        for rgb in rgbs:
            t = time.perf_counter()
            frame_feeds(rgb, info)
            times["preprocess"].append(time.perf_counter() - t)
            t = time.perf_counter()
            cv2_resize(rgb, side)
            times["cv2_resize"].append(time.perf_counter() - t)
    cap.release()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="camera frame WxH")
    ap.add_argument("--input", type=int, default=224, help="model input side (square)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "bench.avi")
        write_video(video, 60, w, h)
        times = measure(video, args.input, args.blocks, max(1, args.frames // args.blocks))
    decode_ms = statistics.median(times["decode"]) * 1e3
    rows = {}
    for stage, samples in times.items():
        ms = statistics.median(samples) * 1e3
        rows[stage] = {"median_ms": round(ms, 3), "p95_ms": round(float(np.percentile(samples, 95)) * 1e3, 3),
                       "fps_alone": round(1e3 / ms, 1), "x_decode": round(ms / decode_ms, 2)}
    path_ms = sum(rows[s]["median_ms"] for s in ("decode", "to_rgb", "preprocess"))
    result = {"frame": f"{w}x{h}", "input": args.input, "frames": len(times["decode"]),
              "opencv": cv2.__version__, "load_avg": os.getloadavg()[0], "stages": rows,
              "source_path_ms": round(path_ms, 3), "source_path_fps": round(1e3 / path_ms, 1)}
    print(json.dumps(result, indent=2))
    print(f"\n{w}x{h} frames -> [1, 3, {args.input}, {args.input}] float32 (OpenCV {cv2.__version__}, "
          f"load {result['load_avg']:.2f})")
    print(f"{'stage':<12}{'median ms':>10}{'p95 ms':>9}{'fps alone':>11}{'x decode':>10}")
    for stage, r in rows.items():
        print(f"{stage:<12}{r['median_ms']:>10.3f}{r['p95_ms']:>9.3f}{r['fps_alone']:>11.1f}{r['x_decode']:>10.2f}")
    print(f"source path (decode + to_rgb + preprocess): {path_ms:.2f} ms/frame, {result['source_path_fps']} fps")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
