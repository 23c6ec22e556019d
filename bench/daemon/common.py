"""What every scenario of bench/daemon_bench.py shares: the models, the bare interpreter, a daemon
to measure, child processes and percentiles.

Models: each is converted once to an int8 .gpk with ``ganglion convert`` (digits: its real
calibration set; MobileNetV2-style 224x224: 64 N(0,1) samples). Each scenario runs in a fresh
child process (``run_child``: ``daemon_bench.py --child KIND MODEL``), so memory figures are clean.

The project's modules are imported inside the functions that use them, not here: a worker process
that a measured daemon spawns re-imports daemon_bench.py (and so this package) as ``__mp_main__``,
and its RSS and start-up must not count the bench's parent-side imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "bench" / "daemon_bench.py")        # the CLI; its --child runs one scenario
GANGLION = str(Path(sys.executable).parent / "ganglion")
SETTLE = 5              # the first calls of a timed block are not timed (the other side spins down)


def rss_mb(pids) -> float:
    from edge.daemon.metrics import _rss
    return round(sum(_rss(p) for p in pids) / 2**20, 1)


def prepare(name: str, workdir: Path) -> Path:
    out = workdir / f"{name}.gpk"
    if out.exists():
        return out
    if name == "digits":
        onnx_path, calib = ROOT / "examples/digits/digits_cnn.onnx", ROOT / "examples/digits/calib.npz"
    else:
        import onnx
        from examples.models import mobilenet_v2
        onnx_path, calib = workdir / "mobilenet_v2.onnx", workdir / "mnv2_calib.npz"
        onnx.save(mobilenet_v2.build(), str(onnx_path))
        x = np.random.default_rng(0).normal(size=(64, 3, 224, 224)).astype(np.float32)
        name_in = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
        np.savez(calib, **{name_in: x})
    res = subprocess.run([GANGLION, "convert", str(onnx_path), "--calib", str(calib), "-o", str(out)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if res.returncode != 0:
        raise SystemExit(f"convert {name} failed:\n{res.stderr[-2000:]}")
    return out


class Bare:
    """The bare LiteRT interpreter, driven the way a hand-written loop would."""

    def __init__(self, model: str, threads: int):
        from core import artifact
        from edge.backends.litert_backend import _spec
        from edge.daemon.benchmark import sample_feeds
        from core.litert import make_interpreter
        self.interp = make_interpreter(artifact.read(model).model_bytes("tflite"), num_threads=threads)
        self.ins, self.outs = self.interp.get_input_details(), self.interp.get_output_details()
        feeds = sample_feeds([_spec(d) for d in self.ins], 1)
        self.arrays = [feeds[d["name"]] for d in self.ins]

    def __call__(self):
        for d, a in zip(self.ins, self.arrays):
            self.interp.set_tensor(d["index"], a)
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.outs]


def start_daemon(model: str, threads: int, max_batch: int, budget: float, queue: int, workers: int = 1,
                 isolation: str = "process", sources=(), sinks=()):
    """A started Daemon of ``model`` with a memory outbox (metrics hourly: they would add noise)."""
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    cfg = from_dict({"model": {"path": model, "threads": threads},
                     "workers": {"count": workers, "isolation": isolation},
                     "batch": {"max_batch": max_batch, "budget_ms": budget, "queue_size": queue},
                     "metrics": {"interval_s": 3600}, "sources": list(sources), "sinks": list(sinks)}).require_model()
    return Daemon(cfg, outbox=MemoryOutbox()).start()


def run_child(kind: str, model: Path, runs: int, threads: int) -> dict:
    res = subprocess.run([sys.executable, SCRIPT, "--child", kind, str(model), "--runs", str(runs),
                          "--threads", str(threads)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def pct_ms(samples: list[float], pct: float) -> float:
    return float(np.percentile(samples, pct) * 1e3)
