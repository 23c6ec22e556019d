"""The worker spec is resolved in the parent (edge/daemon/spec.py): the board's runtime choices
under the model's own, as plain values; a worker started from it parses no config, and a board
that does not load stops the daemon before any worker starts."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from core.errors import GanglionError
from edge.daemon.app import Daemon
from edge.daemon.config import from_dict
from edge.daemon.outbox import MemoryOutbox
from edge.daemon.spec import worker_spec
from tests.edge import models

pytestmark = pytest.mark.timeout(120)


def _cfg(model, board=None, **model_fields):
    table = {"model": {"path": str(model), **model_fields}, "metrics": {"interval_s": 3600}}
    if board:
        table["board"] = board
    return from_dict(table).require_model()


@pytest.mark.parametrize("board, model_fields, expected", [
    (None, {}, {"backend": None, "threads": None, "delegate": None, "providers": ()}),
    ("x86_64-generic", {}, {"backend": "litert", "threads": 2, "delegate": None}),     # xnnpack: built in
    ("x86_64-generic", {"threads": 1}, {"backend": "litert", "threads": 1}),            # the model's wins
    ("coral-devboard", {}, {"threads": 4, "delegate": "libedgetpu.so.1"}),
    ("jetson-orin-nano", {}, {"backend": "onnxruntime", "threads": 6,
                              "providers": ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"),
                              "engine_cache_dir": "/var/cache/ganglion/trt-engines"}),
])
def test_the_board_runtime_is_resolved_into_the_spec(tmp_path, board, model_fields, expected):
    spec = worker_spec(_cfg(tmp_path / "m.tflite", board, **model_fields))
    assert {k: getattr(spec, k) for k in expected} == expected


def test_a_worker_opens_a_board_spec_without_parsing_config(dense_tflite):
    """What the worker process runs (unpickle the spec, open the backend) in a fresh interpreter:
    neither pydantic nor the board schema is imported, and the board's thread count arrived."""
    spec = worker_spec(_cfg(dense_tflite, "x86_64-generic"))
    code = ("import json, pickle, sys\n"
            "from edge.daemon import worker\n"
            "spec = pickle.loads(sys.stdin.buffer.read())\n"
            "backend = worker.open_for(spec)\n"
            "print(json.dumps({'threads': spec.threads, 'backend': backend.name,\n"
            "                  'loaded': sorted(m for m in ('pydantic', 'boards', 'core.config') if m in sys.modules)}))")
    res = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(spec), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout) == {"threads": 2, "backend": "litert", "loaded": []}


def test_a_daemon_on_a_board_serves_through_its_workers(dense_tflite):
    daemon = Daemon(_cfg(dense_tflite, "x86_64-generic"), outbox=MemoryOutbox()).start()
    try:
        x = np.random.default_rng(3).normal(size=(1, models.IN)).astype(np.float32)
        result = daemon.infer(x, timeout=20)
        assert result.ok, result.error
        np.testing.assert_allclose(result.outputs["y"], models.reference(x), rtol=1e-5, atol=1e-5)
    finally:
        daemon.stop()
        daemon.shutdown()


def test_an_unknown_board_fails_in_the_parent_before_any_worker(dense_tflite):
    with pytest.raises(GanglionError) as info:
        Daemon(_cfg(dense_tflite, "no-such-board"), outbox=MemoryOutbox())
    assert info.value.code == "board.unknown" and "x86_64-generic" in info.value.hint
