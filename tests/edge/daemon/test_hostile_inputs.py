"""Issue 9, items 1-4 and 7: hostile inputs against a real ``ganglion run`` (subprocess, real
workers). No input may crash or loop the daemon; each is answered exactly once and moved to
done/ or failed/; a trusted key means nothing unsigned runs; permanent start-up failures exit
with their own code (78) so systemd stops restarting."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core import keys
from core.errors import EXIT_PERMANENT, InputError, UsageError
from edge.backends import open_backend
from edge.daemon.commands import config_set
from edge.daemon.sources import FolderSource, error_file_name
from tests.edge.conftest import make_gpk
from tests.edge.daemon import hostile
from tests.edge.daemon.helpers import drop_npy, make_daemon, sigterm, wait_for

pytestmark = pytest.mark.timeout(180)
GANGLION = str(Path(sys.executable).parent / "ganglion")
LONG = "a" * 247 + ".npy"                      # 251 characters: NAME.error.json would pass 255 bytes


def _start(*args, cwd=None):
    return subprocess.Popen([GANGLION, "run", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _poison(inbox: Path, secret: Path) -> dict[str, str]:
    """Write the poison files; returns file name -> the error code it must be answered with."""
    files = {f"huge{i:02d}.npy": hostile.lying_npy((100_000_000, 1, 8, 8)) for i in range(20)}
    expect = {name: "input.too_large" for name in files}
    files["bomb.npz"], expect["bomb.npz"] = hostile.npz_bomb(256), "input.too_large"
    files["wrongshape.npy"], expect["wrongshape.npy"] = hostile.npy_header((75, 1)) + b"\0" * 300, "input.shape"
    files["short.npy"], expect["short.npy"] = hostile.lying_npy((2, 4)), "input.npy"
    files["nan.npy"], expect["nan.npy"] = hostile.npy(np.array([[1, np.nan, 2, 3]], np.float32)), "input.not_finite"
    files["inf.json"], expect["inf.json"] = b'{"inputs": {"x": [[1, 2, Infinity, 4]]}}', "input.not_finite"
    files["empty.npy"], expect["empty.npy"] = hostile.npy(np.zeros((0, 4), np.float32)), "input.empty"
    files["object.npy"], expect["object.npy"] = hostile.npy_header((1, 4), "|O") + b"\0" * 32, "input.npy"
    files[LONG], expect[LONG] = b"not numpy at all", "input.npy"
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    secret.write_text(json.dumps({"inputs": {"x": [[1, 2, 3, 4]]}}))
    os.symlink(secret, inbox / "link.json")
    os.symlink("/proc/self/environ", inbox / "environ.bin")
    expect["link.json"] = expect["environ.bin"] = "input.symlink"
    return expect


def test_poison_files_are_answered_once_moved_to_failed_and_the_daemon_keeps_running(dense_tflite, tmp_path):
    inbox, out, secret = tmp_path / "in", tmp_path / "results.jsonl", tmp_path / "secret.json"
    inbox.mkdir()
    expect = _poison(inbox, secret)                 # there before the start: issue 9 saw exit 4 every start
    proc = _start("--model", dense_tflite, "--watch", inbox, "--jsonl", out)
    try:
        assert wait_for(lambda: len(_records(out)) >= len(expect), timeout=60), proc.stderr and _records(out)
        drop_npy(inbox, "good.npy", np.ones((1, 4), np.float32))
        assert wait_for(lambda: (inbox / "done" / "good.npy").exists(), timeout=20)
        assert proc.poll() is None, "the daemon exited"
    finally:
        err = sigterm(proc)
    assert proc.returncode == 0, err
    records = _records(out)
    assert sorted(r["file"] for r in records) == sorted([*expect, "good.npy"])     # each exactly once
    got = {r["file"]: r["error"]["code"] for r in records if not r["ok"]}
    assert got == expect
    failed = inbox / "failed"
    for name, code in expect.items():
        assert os.path.lexists(failed / name), name
        assert json.loads((failed / error_file_name(name)).read_text())["code"] == code
    assert json.loads((failed / error_file_name(LONG)).read_text())["file"] == LONG
    assert (failed / "link.json").is_symlink() and secret.exists()          # the link moved, not its target
    assert not list((inbox / "processing").iterdir())


@pytest.mark.parametrize("model", ["dense_tflite", "dense_onnx"])
def test_a_trusted_key_refuses_a_bare_model_with_the_permanent_exit_code(model, request, tmp_path):
    path = request.getfixturevalue(model)
    _, pub = keys.generate(tmp_path / "k.key", tmp_path / "k.pub")
    with pytest.raises(InputError) as info:
        open_backend(path, trusted_keys=[pub])
    assert info.value.code == "artifact.unsigned" and "--signing-key" in info.value.hint
    res = subprocess.run([GANGLION, "run", "--model", str(path), "--trusted-key", str(pub)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == EXIT_PERMANENT, res.stderr
    assert "artifact.unsigned" in res.stderr and "Traceback" not in res.stderr


def test_permanent_start_failures_exit_78_and_the_unit_stops_restarting_on_it(tmp_path):
    good_key, _ = keys.generate(tmp_path / "a.key", tmp_path / "a.pub")
    _, other_pub = keys.generate(tmp_path / "b.key", tmp_path / "b.pub")
    gpk = make_gpk(tmp_path / "m.gpk", key=keys.load_private(good_key))
    bad_sig = subprocess.run([GANGLION, "run", "--model", gpk, "--trusted-key", other_pub],
                             capture_output=True, text=True, timeout=60)
    assert bad_sig.returncode == EXIT_PERMANENT, bad_sig.stderr
    assert "signature" in bad_sig.stderr
    missing = subprocess.run([GANGLION, "run", "--model", tmp_path / "nope.gpk"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == EXIT_PERMANENT and "input.not_found" in missing.stderr
    unit = subprocess.run([GANGLION, "run", "--model", gpk, "--print-systemd-unit"], capture_output=True,
                          text=True, timeout=60).stdout
    assert f"RestartPreventExitStatus={EXIT_PERMANENT}" in unit and "RestartForceExitStatus=75" in unit


@pytest.mark.parametrize("key,value", [("metrics.interval_s", 1e-9), ("metrics.interval_s", float("inf")),
                                       ("metrics.interval_s", float("nan")), ("batch.budget_ms", 1e12),
                                       ("workers.shutdown_s", 0), ("batch.queue_size", 10**9)])
def test_config_set_refuses_values_out_of_range(key, value, dense_tflite):
    daemon, _ = make_daemon(dense_tflite)
    before = daemon.cfg
    with pytest.raises(UsageError) as info:
        config_set(daemon, {"key": key, "value": value})
    assert info.value.where == key and daemon.cfg is before
    assert config_set(daemon, {"key": key if key != "workers.shutdown_s" else "metrics.interval_s",
                               "value": 5})["value"] == 5


class _Answering:
    """Stands in for the daemon in a pure-logic test: answers every submit at once, like a fast worker."""

    def __init__(self):
        self.submitted = []
        self.events = []

    def submit(self, source, value, meta, on_done):
        self.submitted.append(meta["file"])
        on_done(type("R", (), {"ok": True, "error": None})())

    def reject(self, source, err, meta, on_done):
        self.submitted.append(meta["file"])
        on_done(type("R", (), {"ok": False, "error": err.to_dict()})())

    def event(self, ev):
        self.events.append(ev)


def test_a_stale_directory_listing_cannot_answer_a_file_twice(tmp_path):
    """What issue 9 saw 6 times in 3,150 files: a scan listed a file, its answer moved it to done/,
    and the same scan then read it again ("No such file"). The claim (a rename) makes that a no-op."""
    daemon = _Answering()
    source = FolderSource(daemon, str(tmp_path / "in"))
    drop_npy(tmp_path / "in", "a.npy", np.ones((1, 4), np.float32))
    (tmp_path / "in" / "notes.txt").write_text("not an input")
    listing = sorted(os.listdir(tmp_path / "in"))           # the scan's view, taken before the answer
    for name in listing + listing:
        source._consider(name)
    assert daemon.submitted == ["a.npy"]
    assert (tmp_path / "in" / "done" / "a.npy").exists()
    assert [e["file"] for e in daemon.events if e["event"] == "input_skipped"] == ["notes.txt"]  # once


def test_files_claimed_by_a_killed_daemon_are_read_again(tmp_path):
    (tmp_path / "in" / "processing").mkdir(parents=True)
    drop_npy(tmp_path / "in" / "processing", "left.npy", np.ones((1, 4), np.float32))
    daemon = _Answering()
    source = FolderSource(daemon, str(tmp_path / "in"))
    for name in sorted(os.listdir(tmp_path / "in")):
        source._consider(name)
    assert daemon.submitted == ["left.npy"] and (tmp_path / "in" / "done" / "left.npy").exists()


def test_many_files_dropped_while_running_are_each_answered_exactly_once(dense_tflite, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "r.jsonl"
    daemon, _ = make_daemon(dense_tflite, sources=[{"kind": "folder", "path": str(inbox)}],
                            sinks=[{"kind": "jsonl", "path": str(out)}])
    daemon.start()
    try:
        for i in range(400):
            drop_npy(inbox, f"f{i:03d}.npy", np.full((1, 4), i, np.float32))
            if i % 50 == 0:
                time.sleep(0.05)
        assert wait_for(lambda: len(_records(out)) >= 400, timeout=60)
        time.sleep(0.5)                                     # a second answer would land by now
    finally:
        daemon.stop()
        daemon.shutdown()
    records = _records(out)
    assert len(records) == 400 and all(r["ok"] for r in records), [r for r in records if not r["ok"]][:3]
    assert len({r["file"] for r in records}) == 400
    assert len(list((inbox / "done").iterdir())) == 400 and not list((inbox / "failed").iterdir())


def test_long_names_keep_their_error_file():
    name = "é" * 200 + ".npy"                              # 404 bytes in UTF-8
    short = error_file_name(name)
    assert len(os.fsencode(short)) <= 255 and short.endswith(".error.json")
    assert error_file_name("x.npy") == "x.npy.error.json"
    assert error_file_name(name) != error_file_name("é" * 201 + ".npy")
