"""Worker-owned lanes (edge/daemon/lane.py): a worker process reads the watched folder and writes the
results itself; the parent only supervises. Real worker processes, real crashes (SIGSEGV, SIGKILL).

The rules that must hold as on the parent's request path: every file is answered exactly once; a
crash costs its input one retry; a second crash answers it with ``runtime.worker_crash`` (result
line, ``failed/`` and its ``.error.json``); neighbours of a poison file are not charged.
"""
import json
import os
import signal

import numpy as np
import pytest

from edge.daemon import commands, lane
from edge.daemon.config import from_dict
from tests.edge.daemon.helpers import drop_npy, make_daemon, wait_for

pytestmark = pytest.mark.timeout(120)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _daemon(tmp_path, factory, factory_args=None, sinks=None, **kw):
    inbox, out = tmp_path / "in", tmp_path / "results.jsonl"
    sinks = [{"kind": "jsonl", "path": str(out)}] if sinks is None else sinks
    daemon, outbox = make_daemon(tmp_path / "unused.tflite", factory=factory, factory_args=factory_args,
                                 sources=[{"kind": "folder", "path": str(inbox)}], sinks=sinks, **kw)
    return daemon, outbox, inbox, out


@pytest.mark.parametrize("sinks, isolation, laned", [
    ([{"kind": "jsonl", "path": "r.jsonl"}, {"kind": "stdout"}], "process", True),
    ([{"kind": "jsonl", "path": "r.jsonl"}], "thread", False),           # no process: no lane
    ([{"kind": "jsonl", "path": "r.jsonl"}, {"kind": "mqtt"}], "process", False),   # the spool is the parent's
])
def test_which_folders_the_workers_read_themselves(sinks, isolation, laned):
    cfg = from_dict({"model": {"path": "m.tflite"}, "workers": {"isolation": isolation},
                     "sources": [{"kind": "folder", "path": "in"}, {"kind": "replay", "path": "r.npy"}],
                     "sinks": sinks, "telemetry": {"broker": "mqtt://127.0.0.1:1883"}})
    assert lane.lane_folders(cfg) == (("in",) if laned else ())


def test_a_worker_answers_its_folder_and_the_parent_only_counts(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:on_poison")
    assert daemon.sources == [] and len(daemon.lane_sources) == 1     # no folder thread in the parent
    daemon.start()
    try:
        xs = np.random.default_rng(0).normal(size=(12, 1, 4)).astype(np.float32)
        for i, x in enumerate(xs):
            drop_npy(inbox, f"x{i:02d}.npy", x)
        (inbox / "bad.npy").write_bytes(b"not an npy")
        assert wait_for(lambda: len(os.listdir(inbox / "done")) == 12 and len(_lines(out)) == 13, 20)
        assert wait_for(lambda: daemon.metrics.totals["results"] == 12 and daemon.metrics.totals["errors"] == 1, 5)
    finally:
        daemon.stop()
        daemon.shutdown()
    by_file = {r["file"]: r for r in _lines(out)}
    for i, x in enumerate(xs):
        r = by_file[f"x{i:02d}.npy"]
        assert r["ok"] and r["worker"] == "worker-0"
        np.testing.assert_allclose(r["outputs"]["y"], x[0] * 2, rtol=1e-6)
    assert by_file["bad.npy"]["error"]["code"] == "input.npy"
    assert (inbox / "failed" / "bad.npy.error.json").exists()


def test_a_poison_file_is_retried_once_then_answered_with_an_error(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:on_poison")
    daemon.start()
    try:
        drop_npy(inbox, "a.npy", np.ones((1, 4), np.float32))
        drop_npy(inbox, "b-poison.npy", np.full((1, 4), -1000.0, np.float32))
        drop_npy(inbox, "c.npy", np.full((1, 4), 3.0, np.float32))
        assert wait_for(lambda: len(_lines(out)) == 3, 30), _lines(out)
        assert wait_for(lambda: len(os.listdir(inbox / "done")) == 2, 5)
    finally:
        daemon.stop()
        daemon.shutdown()
    by_file = {r["file"]: r for r in _lines(out)}
    assert by_file["a.npy"]["ok"] and by_file["c.npy"]["ok"]
    assert by_file["b-poison.npy"]["error"]["code"] == "runtime.worker_crash"
    assert json.loads((inbox / "failed" / "b-poison.npy.error.json").read_text())["code"] == "runtime.worker_crash"
    crashes = [e for e in outbox.of("events") if e.get("event") == "crash"]
    assert len(crashes) == 2 and all("SIGSEGV" in e["reason"] for e in crashes)
    assert os.listdir(inbox / "processing") == []


def test_a_worker_killed_holding_a_claim_answers_it_on_the_retry(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:slow", {"delay_s": 1.0})
    daemon.start()
    try:
        drop_npy(inbox, "x.npy", np.full((1, 4), 2.0, np.float32))
        claimed = inbox / "processing" / "worker-0" / "x.npy"
        assert wait_for(claimed.exists, 10)
        os.kill(daemon.pool.slots[0].pid, signal.SIGKILL)
        assert wait_for(lambda: (inbox / "done" / "x.npy").exists(), 20)
    finally:
        daemon.stop()
        daemon.shutdown()
    (r,) = _lines(out)
    assert r["ok"] and r["outputs"]["y"] == [4.0] * 4
    assert [e["event"] for e in outbox.of("events") if e.get("event") == "crash"] == ["crash"]


def test_a_stop_puts_claimed_files_back_without_charging_them(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:slow", {"delay_s": 0.3})
    daemon.start()
    try:
        for i in range(20):
            drop_npy(inbox, f"x{i:02d}.npy", np.ones((1, 4), np.float32))
        assert wait_for(lambda: len(_lines(out)) >= 1, 10)
    finally:
        daemon.stop()
        daemon.shutdown()
    answered = {r["file"] for r in _lines(out)}
    assert all(r["ok"] for r in _lines(out))
    waiting = {n for n in os.listdir(inbox) if n.endswith(".npy")}
    assert answered | waiting == {f"x{i:02d}.npy" for i in range(20)} and not answered & waiting
    assert os.listdir(inbox / "processing") == []


def test_two_workers_share_a_folder_and_each_file_is_answered_once(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:slow", {"delay_s": 0.02}, workers=2)
    daemon.start()
    try:
        assert wait_for(lambda: all(s.ready_at for s in daemon.pool.slots), 30)     # both read the folder
        for i in range(60):
            drop_npy(inbox, f"x{i:02d}.npy", np.full((1, 4), float(i), np.float32))
        (inbox / "notes.txt").write_text("not an input")
        assert wait_for(lambda: len(_lines(out)) >= 60 and len(os.listdir(inbox / "done")) == 60, 30)
        assert wait_for(lambda: any(e.get("event") == "input_skipped" for e in outbox.of("events")), 5)
    finally:
        daemon.stop()
        daemon.shutdown()
    lines = _lines(out)
    assert sorted(r["file"] for r in lines) == [f"x{i:02d}.npy" for i in range(60)]     # once each
    assert {r["worker"] for r in lines} == {"worker-0", "worker-1"}
    assert all(r["outputs"]["y"] == [2.0 * int(r["file"][1:3])] * 4 for r in lines)


def test_a_reload_keeps_the_workers_reading_the_folder(tmp_path):
    daemon, outbox, inbox, out = _daemon(tmp_path, "tests.edge.daemon.crashy:on_poison")
    daemon.start()
    try:
        assert commands.reload(daemon, {})["reloaded"]
        drop_npy(inbox, "after.npy", np.ones((1, 4), np.float32))
        assert wait_for(lambda: (inbox / "done" / "after.npy").exists(), 20)
    finally:
        daemon.stop()
        daemon.shutdown()
    (r,) = _lines(out)
    assert r["ok"] and r["worker"] == "worker-0" and daemon.pool.spec.lanes == (str(inbox),)
