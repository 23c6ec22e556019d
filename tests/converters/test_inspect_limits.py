"""inspect's terminal view cuts long sections (40 lines) and long metadata values; --all and --json
show everything."""
from __future__ import annotations

import json

import numpy as np
import onnx

from converters import inspect as inspector
from converters import tflite
from converters.frontend import load_model
from edge.cli import main
from tests.converters import io_models

DICT = "\n".join(chr(0x4E00 + i) for i in range(6832))     # an OCR character list, one per line


def _with_metadata(tmp_path) -> str:
    model = onnx.load(io_models.stateful(tmp_path / "m.onnx"))
    onnx.helper.set_model_props(model, {"character": DICT, **{f"k{i}": str(i) for i in range(60)}})
    onnx.save(model, str(tmp_path / "meta.onnx"))
    return str(tmp_path / "meta.onnx")


def test_long_metadata_is_cut_unless_all(tmp_path, capsys):
    path = _with_metadata(tmp_path)
    assert main(["inspect", path]) == 0
    short = capsys.readouterr().out
    assert len(short.splitlines()) < 80
    assert "character = 一... (6,832 lines, 13,663 chars; use --all)" in short
    assert "... 21 more entries (use --all)" in short                # 61 entries, 40 shown
    assert main(["inspect", path, "--all"]) == 0
    full = capsys.readouterr().out
    assert DICT in full and "k59 = 59" in full and "use --all" not in full
    assert main(["inspect", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["character"] == DICT


def test_tensor_and_node_lists_are_cut_at_the_limit(tmp_path):
    model = load_model(io_models.stateful(tmp_path / "m.onnx"))
    flat = tflite.build(model, None, tflite.TFLiteOptions(quantize="none")).flatbuffer
    info = inspector.inspect_bytes(flat, suffix=".tflite")
    tensors = len(info["subgraphs"][0]["tensors"])
    text = inspector.render(info, limit=5)
    assert f"... {tensors - 5} more tensors (use --all)" in text
    assert "more tensors" not in inspector.render(info, limit=None)
    onnx_info = inspector.inspect_bytes(model.SerializeToString(), suffix=".onnx")
    assert "... 5 more nodes (use --all)" in inspector.render(onnx_info, limit=3)
    assert np.all([n["name"] in inspector.render(onnx_info, limit=None) for n in onnx_info["node_list"]])
