"""The device's image preprocessing must equal the converter's, tensor for tensor: the int8 ranges
were calibrated on the converter's output. Also the digits CNN end to end: PNG files through the
daemon give the same answers as the exact arrays."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters.calibrate.preprocess import PreprocessSpec
from core.errors import InputError
from edge import preprocess
from tests.edge.daemon.helpers import make_daemon, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


IMG = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("block, shape", [
    ({}, (1, 3, 16, 16)),
    ({"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]}, (1, 16, 16, 3)),
    ({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW", "resize": "crop"},
     (1, 3, 24, 20)),
    ({"channels": "BGR", "size": [10, 12], "layout": "NHWC"}, (1, 10, 12, 3)),
    ({"channels": "L", "resize": "crop"}, (1, 1, 8, 8)),
])
def test_device_preprocessing_equals_the_converters(block, shape):
    spec = PreprocessSpec.from_dict(block)
    expected = spec.apply(Image.open(io.BytesIO(_png(IMG))), shape)
    got = preprocess.image_to_tensor(preprocess.open_image(_png(IMG)), shape, spec.to_dict(), "float32")
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_uint8_model_without_spec_gets_raw_pixels():
    got = preprocess.image_to_tensor(preprocess.open_image(_png(IMG)), (1, 8, 8, 3), None, "uint8")
    assert got.dtype == np.uint8 and got.shape == (1, 8, 8, 3)


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"\xff\xd8\xff\xe0broken"])
def test_broken_images_are_input_errors(data):
    with pytest.raises(InputError):
        preprocess.open_image(data)


@pytest.mark.timeout(120)
def test_digits_pngs_through_the_daemon_match_the_arrays(tmp_path):
    from converters.api import convert
    from converters.config import ConvertConfig
    gpk = tmp_path / "digits.gpk"
    convert(ConvertConfig(model=ROOT / "examples/digits/digits_cnn.onnx", output=gpk,
                          calib=ROOT / "examples/digits/calib.npz", preprocess='{"channels": "L"}',
                          labels=ROOT / "examples/digits/labels.txt", progress=False))
    holdout = np.load(ROOT / "examples/digits/holdout.npz")["input"][:40]
    truth = np.load(ROOT / "examples/digits/holdout_labels.npy")[:40]
    inbox, out = tmp_path / "in", tmp_path / "out.jsonl"
    inbox.mkdir()
    for i, x in enumerate(holdout):
        pixels = np.round(x[0] * 255).astype(np.uint8)             # what a camera would deliver
        (inbox / f"{i:03d}.png").write_bytes(_png(pixels))
        np.save(inbox / f"{i:03d}.npy", np.round(x * 255)[None].astype(np.float32) / np.float32(255))
    daemon, _ = make_daemon(gpk, sources=[{"kind": "folder", "path": str(inbox)}],
                            sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    try:
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 80, timeout=60)
    finally:
        daemon.stop()
        daemon.shutdown()
    recs = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert all(r["ok"] for r in recs.values())
    for i in range(40):
        png, arr = recs[f"{i:03d}.png"], recs[f"{i:03d}.npy"]
        np.testing.assert_allclose(png["outputs"]["logits"], arr["outputs"]["logits"], rtol=1e-5, atol=1e-5)
        assert png["top1"]["label"] == str(png["top1"]["index"])
    accuracy = np.mean([recs[f"{i:03d}.png"]["top1"]["index"] == truth[i] for i in range(40)])
    assert accuracy >= 0.9


@pytest.mark.timeout(120)
def test_int8_io_digits_artifact_serves_the_same_classes(tmp_path):
    """--io int8: the device quantizes float inputs with the input's own scale/zero point and
    dequantizes the logits; the classes must match the float-I/O artifact's."""
    from converters.api import convert
    from converters.config import ConvertConfig
    from edge.backends import dequantize_outputs, open_backend
    paths = {}
    for io_type in ("float32", "int8"):
        paths[io_type] = tmp_path / f"digits-{io_type}.gpk"
        convert(ConvertConfig(model=ROOT / "examples/digits/digits_cnn.onnx", output=paths[io_type],
                              calib=ROOT / "examples/digits/calib.npz", io=io_type, progress=False))
    x = np.load(ROOT / "examples/digits/holdout.npz")["input"][:100]
    f32, q8 = open_backend(paths["float32"]), open_backend(paths["int8"])
    assert q8.inputs()[0].dtype == "int8" and q8.inputs()[0].quantized
    ref = f32.run({f32.inputs()[0].name: x})
    got = dequantize_outputs(q8.outputs(), q8.run({q8.inputs()[0].name: x}))
    ref_top, got_top = (np.argmax(next(iter(o.values())), axis=1) for o in (ref, got))
    assert np.mean(ref_top == got_top) >= 0.95
