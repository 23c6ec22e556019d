"""A trained YOLOv8-style detector converts to int8 TFLite by default, runs in LiteRT (XNNPACK),
and keeps its detection F1 (IoU 0.5) on held-out images within 1 point of the float model.

Model and data: the committed files made by examples/detector/train.py (synthetic coloured
shapes; the head concatenates decoded pixel boxes, 0-64, with class sigmoids, 0-1, across three
scales -- the pattern whose tied scales used to be refused by LiteRT). Decode + NMS + F1 in NumPy
(tests/converters/detection.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import api
from converters.config import ConvertConfig
from converters.tflite.check import check_flatbuffer
from converters.verify.metrics import sqnr_db
from examples.detector import shapes
from tests.converters import detection

DETECTOR = Path(__file__).resolve().parents[3] / "examples" / "detector"


@pytest.fixture(scope="module")
def data():
    d = np.load(DETECTOR / "data.npz", allow_pickle=False)
    return d["calib"], d["holdout"], shapes.unpack_boxes(d["holdout_boxes"], d["holdout_offsets"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("detector")
    np.savez(tmp / "calib.npz", images=shapes.to_input(data[0]))
    cfg = ConvertConfig(model=DETECTOR / "detector.onnx", output=tmp / "detector.tflite", calib=tmp / "calib.npz",
                        progress=False)
    api.convert(cfg)
    return (tmp / "detector.tflite").read_bytes()


def outputs_float(images: np.ndarray) -> list[np.ndarray]:
    return detection.run_onnx(DETECTOR / "detector.onnx", images)


def test_committed_detector_is_small_and_trained(data):
    assert (DETECTOR / "detector.onnx").stat().st_size < 1_000_000
    _, holdout, boxes = data
    assert detection.f1_score(outputs_float(holdout), boxes) >= 0.8


@pytest.mark.parametrize("use_xnnpack", [True, False], ids=["xnnpack", "reference"])
def test_int8_detector_f1_within_one_point_of_float(converted, data, use_xnnpack):
    check_flatbuffer(converted)
    _, holdout, boxes = data
    ref, got = outputs_float(holdout), detection.run_litert(converted, holdout, use_xnnpack)
    f1_float, f1_int8 = detection.f1_score(ref, boxes), detection.f1_score(got, boxes)
    sqnr = sqnr_db(np.concatenate(ref), np.concatenate(got))
    assert f1_int8 >= f1_float - 0.01, f"F1 float {f1_float:.3f}, int8 {f1_int8:.3f} (SQNR {sqnr:.1f} dB)"


def test_detection_metrics_on_known_boxes():
    """The test helpers themselves: a perfect prediction scores 1, a shifted one 0, NMS keeps one."""
    truth = np.array([[10, 10, 30, 30, 1]], np.float32)
    def out(cx, cy, w, h, cls_scores):
        return np.array([cx, cy, w, h, *cls_scores], np.float32).reshape(1, -1, 1)
    exact = out(20, 20, 20, 20, [0.1, 0.9, 0.1])
    assert detection.f1_score([exact], [truth]) == 1.0
    assert detection.f1_score([out(35, 35, 20, 20, [0.1, 0.9, 0.1])], [truth]) == 0.0
    assert detection.f1_score([out(20, 20, 20, 20, [0.9, 0.1, 0.1])], [truth]) == 0.0      # wrong class
    twice = np.concatenate([exact, out(21, 20, 20, 20, [0.1, 0.8, 0.1])], axis=2)
    assert len(detection.nms(detection.decode(twice))) == 1
    assert detection.f1_score([twice], [truth]) == 1.0
