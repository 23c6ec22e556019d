"""Sources end to end: a watched folder and a replay file through real workers into the JSONL sink."""
import json
import time

import numpy as np
import pytest

from tests.edge import models
from tests.edge.daemon.helpers import drop_npy, make_daemon, wait_for

pytestmark = pytest.mark.timeout(120)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_watched_folder_to_jsonl_moves_files_to_done_and_failed(dense_tflite, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "results.jsonl"
    daemon, _ = make_daemon(dense_tflite, sources=[{"kind": "folder", "path": str(inbox)}],
                            sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    try:
        good = {f"s{i}.npy": np.random.default_rng(i).normal(size=(1, 4)).astype(np.float32) for i in range(5)}
        for name, arr in good.items():
            np.save(inbox / ".tmp", arr)                       # writers copy, then rename into place
            (inbox / ".tmp.npy").rename(inbox / name)
        (inbox / "garbage.npy").write_bytes(b"definitely not numpy")
        (inbox / "wrong.npy").write_bytes(_npy(np.zeros((1, 7), np.float32)))
        (inbox / "list.json").write_text(json.dumps({"inputs": {"x": [[1, 2, 3, 4]]}}))
        (inbox / "notes.txt").write_text("ignored: not an input type")
        assert wait_for(lambda: len(_lines(out)) == 8, timeout=20)
        assert wait_for(lambda: len(list((inbox / "done").iterdir())) == 6, timeout=5)
    finally:
        daemon.stop()
        daemon.shutdown()
    records = {r["file"]: r for r in _lines(out)}
    for name, arr in good.items():
        assert records[name]["ok"]
        np.testing.assert_allclose(records[name]["outputs"]["y"], models.reference(arr)[0], rtol=1e-5, atol=1e-5)
    assert records["list.json"]["ok"]
    assert records["garbage.npy"]["error"]["code"] == "input.npy"
    assert records["wrong.npy"]["error"]["code"] == "input.shape"
    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted([*good, "list.json"])
    failed = sorted(p.name for p in (inbox / "failed").iterdir())
    assert failed == ["garbage.npy", "garbage.npy.error.json", "wrong.npy", "wrong.npy.error.json"]
    assert json.loads((inbox / "failed" / "wrong.npy.error.json").read_text())["code"] == "input.shape"
    assert (inbox / "notes.txt").exists()


def test_unfinished_files_stay_for_the_next_start(tmp_path):
    """Files not yet answered when the daemon stops are left in the inbox, not lost or moved."""
    inbox, out = tmp_path / "in", tmp_path / "r.jsonl"
    daemon, _ = make_daemon(tmp_path / "unused.tflite", factory="tests.edge.daemon.crashy:slow",
                            factory_args={"delay_s": 0.2}, max_batch=1, queue=1,
                            sources=[{"kind": "folder", "path": str(inbox)}],
                            sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    for i in range(10):
        drop_npy(inbox, f"f{i}.npy", np.full((1, 4), i, np.float32))
    time.sleep(0.5)
    daemon.stop()
    daemon.shutdown()
    answered = {r["file"] for r in _lines(out) if r["ok"]}
    done = {p.name for p in (inbox / "done").iterdir()}
    left = {p.name for p in inbox.glob("*.npy")}
    failed = {p.name for p in (inbox / "failed").glob("*.npy")}
    assert done == answered
    assert failed == set()
    assert done | left == {f"f{i}.npy" for i in range(10)} and not (done & left)
    assert left                                            # the stop really interrupted the work


def test_replay_file_is_served_in_order(dense_tflite, tmp_path):
    xs = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    np.savez(tmp_path / "replay.npz", x=xs)
    out = tmp_path / "r.jsonl"
    daemon, _ = make_daemon(dense_tflite, sources=[{"kind": "replay", "path": str(tmp_path / "replay.npz")}],
                            sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    try:
        assert wait_for(lambda: len(_lines(out)) == 12, timeout=20)
    finally:
        daemon.stop()
        daemon.shutdown()
    recs = sorted(_lines(out), key=lambda r: r["index"])
    got = np.array([r["outputs"]["y"] for r in recs])
    np.testing.assert_allclose(got, models.reference(xs), rtol=1e-5, atol=1e-5)


def _npy(arr):
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_unreadable_replay_file_is_reported_once_and_the_daemon_carries_on(dense_tflite, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    daemon, outbox = make_daemon(dense_tflite, sources=[{"kind": "replay", "path": str(tmp_path / "bad.npz")}])
    daemon.start()
    try:
        assert wait_for(lambda: any(e["event"] == "source_failed" for e in outbox.of("events")), timeout=10)
        time.sleep(0.3)
        assert not daemon.stop_event.is_set()
    finally:
        daemon.stop()
        daemon.shutdown()
    events = [e["event"] for e in outbox.of("events")]
    assert events.count("source_failed") == 1 and "restart" not in events
