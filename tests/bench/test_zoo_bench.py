"""bench/zoo_bench.py on a two-model zoo made here with onnx.helper: one model that converts (its
SQNRs against ORT's quantizer are measured) and one with data-dependent post-processing (NonZero)
that must be refused with a typed error. The real zoo (bench/zoo/export.py) needs torch and is not
built here; this checks that the bench's plumbing (child processes, error parsing, JSON, table)
works, so the lead's run of the merged converter does not fail on the bench itself."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import zoo_bench

ROOT = Path(__file__).resolve().parents[2]


def _conv_model(post_process: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    if post_process:       # the indices of positive values: a data-dependent output shape
        nodes.append(helper.make_node("NonZero", ["y"], ["idx"], name="nonzero"))
        out = helper.make_tensor_value_info("idx", TensorProto.INT64, [4, None])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [out], initializer=[w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _folder(zoo: Path, name: str, post_process: bool) -> None:
    folder = zoo / name
    folder.mkdir(parents=True)
    onnx.save(_conv_model(post_process), str(folder / "model.onnx"))
    rng = np.random.default_rng(1)
    for split, n in (("calib", 10), ("holdout", 4)):
        np.savez(folder / f"{split}.npz", x=rng.normal(size=(n, 1, 3, 16, 16)).astype(np.float32))
    meta = {"task": "test", "primary_output": "idx" if post_process else "y",
            "expect": "refuse" if post_process else "convert"}
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_bench_measures_a_model_and_records_a_refusal(tmp_path):
    zoo = tmp_path / "zoo"
    _folder(zoo, "conv", False)
    _folder(zoo, "postproc", True)
    out = tmp_path / "zoo.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "zoo_bench.py"), "--zoo", str(zoo),
                           "--json", str(out), "--timeout", "240"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    conv = rows["conv"]
    assert conv["convert"]["ok"] and conv["convert"]["peak_rss_mb"] > 0
    assert conv["sqnr_ours"] > 25 and conv["sqnr_qdq"] > 20       # a Conv+Relu quantizes well
    assert set(conv["ort"]) == {"MinMax", "Entropy", "Percentile"}
    assert conv["sqnr_ort_best"] == max(conv["ort"][m]["sqnr_db"]["y"] for m in conv["ort"])
    assert conv["gap_db"] == pytest.approx(conv["sqnr_ours"] - conv["sqnr_ort_best"])
    post = rows["postproc"]
    assert not post["convert"]["ok"] and post["refused_cleanly"], post["convert"]
    assert post["convert"]["error"].startswith("error[")
    assert "conv " in proc.stdout and "refused" in proc.stdout          # the table


@pytest.mark.parametrize("stderr, line, cls", [
    ("warning: x\nerror[convert.unsupported_op]: 2 node(s) cannot be converted:\n  NonZero nz\n  TopK t\n  more\n",
     "error[convert.unsupported_op]: 2 node(s) cannot be converted: | NonZero nz | TopK t", "convert.unsupported_op"),
    ("Traceback (most recent call last):\n  File \"q.py\", line 3\nTypeError: object of type 'NoneType' has no len()\n",
     "crash: TypeError: object of type 'NoneType' has no len()", "crash:TypeError"),
    ("", "", ""),
])
def test_first_error_and_its_class(stderr, line, cls):
    assert zoo_bench.first_error(stderr) == line
    assert zoo_bench.error_class({"error": line}) == cls


def test_an_ort_method_that_quantized_nothing_is_not_a_competitor():
    row = {"primary_output": "p", "ours": {"sqnr_db": {"p": 30.0, "s": 20.0}},
           "ort": {"MinMax": {"sqnr_db": {"p": 200.0}, "quantize_nodes": 0},
                   "Entropy": {"sqnr_db": {"p": 31.5}, "quantize_nodes": 12},
                   "Percentile": {"ok": False, "error": "crash: ValueError"}}}
    zoo_bench.summarise(row)
    assert (row["ort_best_method"], row["sqnr_ort_best"], row["gap_db"]) == ("Entropy", 31.5, -1.5)


def test_task_table_compares_with_the_best_quantizing_ort_method():
    row = {"model": "rec", "metric_kind": "ctc_text",
           "ours": {"task": {"cer": 0.05, "exact_vs_float": 0.9}, "task_float": {"cer": 0.04, "exact_vs_float": 1.0}},
           "ours_qdq": {"task": {"cer": 0.06, "exact_vs_float": 0.8}},
           "ort": {"MinMax": {"task": {"cer": 0.04, "exact_vs_float": 1.0}, "quantize_nodes": 0},   # left float
                   "Entropy": {"task": {"cer": 0.07, "exact_vs_float": 0.95}, "quantize_nodes": 9},
                   "Percentile": {"task": {"cer": 0.06, "exact_vs_float": 0.85}, "quantize_nodes": 9}}}
    lines = {tuple(l.split()[:2]): l.split()[2:] for l in zoo_bench.task_table([row]).splitlines()[1:]}
    assert lines[("rec", "cer")] == ["0.040", "0.050", "0.060", "0.060", "Percentile", "yes"]    # lower is better
    assert lines[("rec", "exact_vs_float")] == ["1.000", "0.900", "0.800", "0.950", "Entropy", "NO"]
