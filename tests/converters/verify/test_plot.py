"""Issue 9, item 12: ``verify --per-layer --plot PREFIX`` draws the per-layer error next to the
table: PREFIX.png (Pillow) and PREFIX.html (one file, inline SVG, nothing fetched)."""
from __future__ import annotations

import re
import shutil

from PIL import Image

from converters.verify import plot
from converters.verify.per_layer import LayerError
from converters.verify.report import VerifyReport
from edge.cli import main


def _row(node, own, out):
    return LayerError(tensor=f"{node}_out", node=node, op="Conv", sqnr_db=out, input_sqnr_db=out + 1, drop_db=1.0,
                      own_sqnr_db=own, added_nsr=0.01, cosine=0.999, max_abs=0.5)


def test_plot_draws_one_bar_per_layer_in_both_files(tmp_path):
    rows = [_row("conv_bad", 12.0, 11.0), _row("conv_ok", 27.0, 25.0), _row("conv<&>", 45.0, 24.0)]
    report = VerifyReport(candidate="tflite", samples=40, outputs={"logits": {"sqnr_db": 24.0}}, per_layer=rows)
    png, page = plot.write(report, tmp_path / "out" / "layers")
    img = Image.open(png)
    assert img.format == "PNG" and img.height > 3 * plot.ROW
    colours = {img.getpixel((plot.LABEL_W + 2, plot.PAD * 2 + plot.ROW * (i + 1) + plot.ROW // 2)) for i in range(3)}
    assert colours == {(214, 39, 40), (255, 127, 14), (44, 160, 44)}           # red, orange, green bands
    text = page.read_text()
    assert text.count("<rect") == 3 and "conv&lt;&amp;&gt;" in text and "conv_bad" in text
    assert not re.search(r"(src|href)=|<script", text)                         # self-contained


def test_verify_plot_from_the_command_line(tmp_path, digits_dir, capsys):
    for name in ("digits_cnn.onnx", "calib.npz", "holdout.npz"):
        shutil.copy(digits_dir / name, tmp_path / name)
    gpk = tmp_path / "d.gpk"
    assert main(["convert", str(tmp_path / "digits_cnn.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(gpk), "-q"]) == 0
    capsys.readouterr()
    assert main(["verify", str(gpk), "--reference", str(tmp_path / "digits_cnn.onnx"), "--data",
                 str(tmp_path / "holdout.npz"), "--limit", "16", "--plot", str(tmp_path / "layers")]) == 0
    got = capsys.readouterr()
    assert "per layer" in got.out and "layers.png" in got.err and "layers.html" in got.err
    assert Image.open(tmp_path / "layers.png").format == "PNG"
    assert (tmp_path / "layers.html").read_text().count("<rect") >= 3
