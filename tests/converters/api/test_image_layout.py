"""An image-folder conversion with a spec that says layout "NCHW" (the ONNX model's) and
``--layout nhwc``: the device must still feed the TFLite model HWC frames.

The manifest's preprocessing then says "auto" (edge.preprocess lays each model's input out from its
shape), the device-side tensor runs in LiteRT and agrees with onnxruntime on the converter's own
NCHW preprocessing of the same image, and verify (NCHW reference, NHWC candidate) reads the folder.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from converters import api
from converters.calibrate.preprocess import PreprocessSpec
from converters.config import ConvertConfig
from core import artifact
from core.litert import make_interpreter
from edge.preprocess import image_to_tensor, open_image
from tests.converters.ops import harness as H

Image = pytest.importorskip("PIL.Image")
SPEC = 'layout = "NCHW"\nmean = [0.5, 0.4, 0.3]\nstd = [0.25, 0.25, 0.25]'


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 3-channel Conv -> Relu model and 10 PNGs of another size (the spec resizes them)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    (root / "imgs").mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    onnx.save(H.model(nodes, {"x": [1, 3, 16, 16]}, ["y"], {"w": w}), str(root / "m.onnx"))
    return root


@pytest.mark.parametrize("layout, target, recorded", [("onnx", "tflite", "NCHW"), ("nhwc", "tflite", "auto"),
                                                      ("nhwc", "both", "auto")])
def test_device_feeds_the_layout_the_model_takes(folder, tmp_path, layout, target, recorded):
    out = tmp_path / "m.gpk"
    api.convert(ConvertConfig(model=folder / "m.onnx", output=out, calib=folder / "imgs", preprocess=SPEC,
                              layout=layout, target=target, progress=False))
    art = artifact.read(out)
    block, spec = art.manifest["preprocessing"], art.manifest["inputs"][0]
    assert block["layout"] == recorded
    image = open_image((folder / "imgs" / "3.png").read_bytes())
    fed = image_to_tensor(image, tuple(spec["shape"]), block, spec["dtype"])      # what the daemon does
    assert fed.shape == tuple(spec["shape"])
    interp = make_interpreter(art.model_bytes("tflite"))
    interp.set_tensor(interp.get_input_details()[0]["index"], fed)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    nchw = PreprocessSpec.parse(SPEC).apply(image, (1, 3, 16, 16))                 # the converter's reference
    ref = H.ort_run(onnx.load(str(folder / "m.onnx")), {"x": nchw})[0]
    if layout == "nhwc":
        ref = ref.transpose(0, 2, 3, 1)
    assert H.sqnr_db(ref, got) > 25      # int8 of a 3x3 conv: ~35 dB; CHW frames in an NHWC model: < 5 dB


def test_verify_reads_the_folder_for_an_nhwc_artifact(folder, tmp_path):
    out = tmp_path / "m.gpk"
    api.convert(ConvertConfig(model=folder / "m.onnx", output=out, calib=folder / "imgs", preprocess=SPEC,
                              layout="nhwc", progress=False))
    report = api.verify(out, folder / "m.onnx", folder / "imgs", progress=False)
    assert report.samples == 10 and report.outputs["y"]["sqnr_db"] > 25, report.outputs
