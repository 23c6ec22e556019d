"""Fuzz (hypothesis): hostile files in a watched folder and hostile MQTT input payloads -- random
.npy headers (dtype, shape, order, data length), .npz zips (members, names, stored or deflated,
bombs), JSON, raw bytes, image magic, odd file names, symlinks -- against one real ``ganglion
run`` (subprocess, real LiteRT worker, real mosquitto). Properties: the daemon never exits, and
every input is answered exactly once (a file by its name, a payload by its sha256) with a result
or a typed input error; files end in done/ or failed/, never in processing/.

Bounded for CI: ``FUZZ_EXAMPLES`` examples of up to 4 files and 4 payloads each (~30 s here).
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import sys
import time
import uuid
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from tests.edge.daemon import hostile
from tests.edge.daemon.helpers import sigterm, wait_for
from tests.fixtures import logged

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(300)]
GANGLION = str(Path(sys.executable).parent / "ganglion")
TOPIC = "ganglion/v1/fuzz/in"
FUZZ_EXAMPLES = int(os.environ.get("GANGLION_FUZZ_EXAMPLES", "40"))
DTYPES = ["<f4", "<f8", "<f2", ">f4", "|u1", "|i1", "<i4", "<i8", "|b1", "<c8", "|O", "<U4", "|V8", "<M8[s]"]
SUFFIXES = [".npy", ".npz", ".json", ".bin", ".raw", ".png", ".jpg", ".txt"]

dims = st.one_of(st.integers(0, 6), st.sampled_from([4, 2**31, 10**8, 2**62]))
shapes = st.lists(dims, max_size=4).map(tuple)


@st.composite
def npy_bytes(draw):
    """A header with a random dtype/shape/order over a random amount of data (often the right one)."""
    dtype, shape = draw(st.sampled_from(DTYPES)), draw(shapes)
    header = hostile.npy_header(shape, dtype)
    if draw(st.booleans()):
        header = header.replace(b"False", b"True")            # fortran_order
    try:
        exact = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    except TypeError:
        exact = 64
    size = draw(st.sampled_from([exact if exact <= 4096 else 64, 0, 7, max(exact - 1, 0) % 4096]))
    return header + draw(st.binary(min_size=size, max_size=size))


@st.composite
def model_arrays(draw):
    """Arrays of the dense model's input (N, 4), values anywhere including NaN and inf."""
    n = draw(st.integers(0, 6))
    values = draw(st.lists(st.floats(width=32), min_size=4 * n, max_size=4 * n))
    dtype = draw(st.sampled_from(["float32", "float64", "int8", "uint8", "int64"]))
    with np.errstate(all="ignore"):
        return hostile.npy(np.array(values, np.float32).reshape(n, 4).astype(dtype))


@st.composite
def npz_bytes(draw):
    members = draw(st.lists(st.tuples(st.sampled_from(["x", "y", "x.npy", "a b", "../x", "dir/"]),
                                      st.one_of(npy_bytes(), model_arrays(), st.binary(max_size=40))),
                            min_size=0, max_size=3))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    if draw(st.integers(0, 9)) == 0:                          # now and then a bomb: >64 MiB of zeros
        return hostile.npz_bomb(draw(st.sampled_from([65, 80])))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, body in members:
            with warnings.catch_warnings():         # duplicate member names are part of the fuzz
                warnings.simplefilter("ignore")
                zf.writestr(name + (".npy" if draw(st.booleans()) else ""), body)
    data = buf.getvalue()
    cut = draw(st.sampled_from([None, None, len(data) // 2, 30]))
    return data if cut is None else data[:cut]


payloads = st.one_of(
    npy_bytes(), model_arrays(), npz_bytes(),
    st.binary(max_size=64), st.binary(min_size=16, max_size=16),      # 16 bytes: the raw input size
    st.builds(lambda b: b"\x89PNG\r\n\x1a\n" + b, st.binary(max_size=64)),
    st.builds(lambda b: b"\xff\xd8\xff" + b, st.binary(max_size=64)),
    st.builds(lambda v: json.dumps(v).encode(), st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.sampled_from(["inputs", "input", "x"]), c,
                                                             max_size=3), max_leaves=12)),
)
stems = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=80)
files = st.tuples(stems, st.sampled_from(SUFFIXES), payloads, st.integers(0, 19))


def _fit(name: str, limit: int = 250) -> str:
    """Trim a name to the file system's limit, in bytes (the suffix is kept)."""
    stem, dot, suffix = name.rpartition(".")
    while len(os.fsencode(name)) > limit:
        stem = stem[:-1]
        name = f"{stem}{dot}{suffix}"
    return name


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1] + ([lines[-1]] if lines and lines[-1].endswith("}") else [])]


def test_hostile_files_and_payloads_are_each_answered_once_and_the_daemon_never_exits(
        dense_tflite, mosquitto, tmp_path):
    inbox, out, secret = tmp_path / "in", tmp_path / "results.jsonl", tmp_path / "secret.json"
    secret.write_text('{"inputs": {"x": [[1, 2, 3, 4]]}}')
    log = tmp_path / "daemon.log"                      # a file: an unread pipe would block the daemon
    proc = logged.spawn([GANGLION, "run", "--model", str(dense_tflite), "--watch", str(inbox),
                         "--broker", mosquitto.url, "--device-id", "fuzz", "--mqtt-input", TOPIC,
                         "--jsonl", str(out), "--spool", str(tmp_path / "spool.db")], log)
    sender = MqttClient(parse_broker_url(mosquitto.url), client_id=f"fuzz-{uuid.uuid4().hex[:8]}").connect(10)
    sent_files, sent_payloads, skipped, counter = [], Counter(), [], itertools.count()

    def answered() -> tuple[Counter, Counter]:
        recs = _records(out)
        return (Counter(r["file"] for r in recs if "file" in r),
                Counter(r["input_sha256"] for r in recs if "input_sha256" in r))

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=st.lists(files, max_size=4), messages=st.lists(payloads, max_size=4))
    def one_batch(batch, messages):
        for stem, suffix, data, pick in batch:
            name = _fit(f"f{next(counter):04d}-{stem}{suffix}")
            tmp = inbox / f".{next(counter)}.part"
            if pick == 0:                                      # a symlink, never followed
                os.symlink(secret, tmp)
            else:
                tmp.write_bytes(data)
            os.replace(tmp, inbox / name)
            (skipped if suffix == ".txt" else sent_files).append(name)
        for data in messages:
            sender.publish(TOPIC, data, qos=1)
            sent_payloads[hashlib.sha256(data).hexdigest()] += 1
        want_files = set(sent_files)

        def caught_up():
            by_file, by_sha = answered()
            return set(by_file) >= want_files and all(by_sha[k] >= n for k, n in sent_payloads.items())
        if not wait_for(caught_up, timeout=30, step=0.05):
            by_file, by_sha = answered()
            missing = {k: n for k, n in sent_payloads.items() if by_sha[k] < n}
            pytest.fail(f"unanswered files {sorted(want_files - set(by_file))}, payloads {missing}, "
                        f"inbox {sorted(os.listdir(inbox))}, processing {os.listdir(inbox / 'processing')}")
        assert proc.poll() is None, logged.tail(log, 3000)

    try:
        wait_for(lambda: inbox.exists(), timeout=30)
        one_batch()
        time.sleep(0.5)                                         # a second answer would land by now
        assert proc.poll() is None
    finally:
        sender.stop()
        sigterm(proc)
        err = logged.tail(log, 10**8)
    assert proc.returncode == 0, err[-3000:]
    by_file, by_sha = answered()
    assert by_file == Counter(sent_files), "a file was answered twice or never"
    assert by_sha == sent_payloads, "a payload was answered twice or never"
    for rec in _records(out):
        assert rec["ok"] or rec["error"]["code"].startswith(("input.", "usage.images")), rec["error"]
    assert not list((inbox / "processing").iterdir())
    assert sorted(os.listdir(inbox)) == sorted(["done", "failed", "processing", *skipped])
    assert "Traceback" not in err
