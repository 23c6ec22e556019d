"""Unit tests of the daemon's pure logic: wire framing, config schema, queues, decoding, metrics."""
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.errors import InputError, UsageError
from edge.backends import TensorSpec
from edge.daemon import config as cfgmod, sdnotify, wire
from edge.daemon.batcher import Batcher, RequestQueue
from edge.daemon.decode import decode_payload
from edge.daemon.messages import Request
from edge.daemon.metrics import Metrics
from edge.preprocess import image_to_tensor, open_image


class Info:
    def __init__(self, shape=(1, 4), dtype="float32", preprocess=None):
        self.inputs = [TensorSpec("x", dtype, shape)]
        self.preprocess = preprocess or {}


# -- wire --------------------------------------------------------------------------------------
def test_wire_roundtrip_keeps_dtype_shape_and_bytes():
    tensors = {"a": np.arange(12, dtype=np.int8).reshape(3, 4), "b": np.ones((2, 0), np.float32),
               "c": np.array(3.5, np.float64)}
    header, back = wire.decode(wire.encode({"op": "run", "id": 7}, tensors))
    assert header["op"] == "run" and header["id"] == 7
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_wire_decode_of_hostile_bytes_is_an_input_error_or_a_valid_frame(data):
    try:
        header, tensors = wire.decode(data)
    except InputError:
        return
    assert isinstance(header, dict) and all(isinstance(v, np.ndarray) for v in tensors.values())


@pytest.mark.parametrize("meta", [{"dtype": "object", "shape": [1]}, {"dtype": "float32", "shape": [-1]},
                                  {"dtype": "float32", "shape": [10]}, {"dtype": "float32", "shape": "x"}])
def test_wire_refuses_bad_tensor_descriptions(meta):
    raw = json.dumps({"op": "run", "tensors": [dict(meta, name="x")]}).encode()
    with pytest.raises(InputError):
        wire.decode(len(raw).to_bytes(4, "little") + raw + b"\0" * 8)


def test_hot_frames_carry_run_and_result_without_json():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    frame = wire.encode({"op": "result", "id": 2**40}, {"y": x, "k": np.array([1, 2], np.int64)})
    assert int.from_bytes(frame[:4], "little") == wire.MAGIC and b"{" not in frame[:20]
    header, back = wire.decode(frame)
    assert header == {"op": "result", "id": 2**40}
    np.testing.assert_array_equal(back["y"], x)
    assert back["k"].dtype == np.int64 and back["k"].tolist() == [1, 2]
    # anything beyond op and id (errors, ready) still goes as a JSON frame
    other = wire.encode({"op": "error", "id": 3, "error": {"code": "x"}})
    assert int.from_bytes(other[:4], "little") != wire.MAGIC
    assert wire.decode(other)[0]["error"] == {"code": "x"}


def test_hot_frames_through_shared_memory_use_the_slot_asked_for():
    from edge.daemon.shm import Inbound, Outbound
    out, inb = Outbound(), Inbound()
    try:
        a = np.random.default_rng(0).normal(size=(1, 20000)).astype(np.float32)
        b = a + 1
        fa = wire.encode({"op": "run", "id": 1}, {"x": a}, out, 0)
        fb = wire.encode({"op": "run", "id": 2}, {"x": b}, out, 1)
        assert len(fa) < 200 and out.segs[0].name != out.segs[1].name
        ha, ta = wire.decode(fa, inb)
        hb, tb = wire.decode(fb, inb)
        np.testing.assert_array_equal(ta["x"], a)      # slot 1's write did not touch slot 0
        np.testing.assert_array_equal(tb["x"], b)
        del ta, tb
    finally:
        inb.close()
        out.close()


@pytest.mark.parametrize("rows", [2000, 4])            # shared memory, and inline below MIN_BYTES
def test_a_batch_given_as_parts_arrives_stacked_in_request_order(rows):
    from edge.daemon.messages import Job, Request
    from edge.daemon.shm import Inbound, Outbound
    rng = np.random.default_rng(3)
    reqs = [Request("t", {"x": rng.normal(size=(1, rows, 3)).astype(np.float32),
                          "k": np.array([[i]], np.int64)}) for i in range(5)]
    job = Job(reqs)
    out, inb = Outbound(), Inbound()
    try:
        header, got = wire.decode(wire.encode({"op": "run", "id": 4}, job.parts(), out, 1), inb)
        assert header == {"op": "run", "id": 4}
        np.testing.assert_array_equal(got["x"], np.concatenate([r.feeds["x"] for r in reqs]))
        np.testing.assert_array_equal(got["x"], job.feeds["x"])          # the lazy concatenation agrees
        assert got["k"].ravel().tolist() == [0, 1, 2, 3, 4]
        assert (out.segs[1] is not None) == (rows == 2000)
        del got
    finally:
        inb.close()
        out.close()


def test_tensors_that_do_not_fit_a_hot_frame_travel_as_json():
    long_name = "x" * 300
    deep = np.zeros((1,) * 40, np.float32)
    for tensors in ({long_name: np.ones(3, np.float32)}, {"d": deep}):
        frame = wire.encode({"op": "run", "id": 1}, tensors)
        assert int.from_bytes(frame[:4], "little") != wire.MAGIC
        header, back = wire.decode(frame)
        assert list(back) == list(tensors) and header["id"] == 1
        for k, v in tensors.items():
            np.testing.assert_array_equal(back[k], v)


def test_hot_frame_cache_does_not_skip_the_size_checks():
    frame = wire.encode({"op": "run", "id": 1}, {"x": np.zeros((1, 4), np.float32)})
    wire.decode(frame)                                  # its descriptions are now cached
    for cut in range(len(frame)):
        with pytest.raises(InputError):
            wire.decode(frame[:cut])
    with pytest.raises(InputError):
        wire.decode(frame + b"\0")
    with pytest.raises(InputError):                     # shared-memory tensor without an Inbound
        from edge.daemon.shm import Outbound
        out = Outbound()
        try:
            wire.decode(wire.encode({"op": "run", "id": 1}, {"x": np.zeros((1, 20000), np.float32)}, out))
        finally:
            out.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 3), st.integers(0, 2))
def test_hostile_hot_frames_are_input_errors_or_valid(data, op, count):
    frame = wire.MAGIC.to_bytes(4, "little") + bytes([op, count]) + data
    try:
        header, tensors = wire.decode(frame)
    except InputError:
        return
    assert header["op"] in wire.HOT_OPS and all(isinstance(v, np.ndarray) for v in tensors.values())


_VALID_HOT = wire.encode({"op": "result", "id": 9}, {"y": np.arange(6, dtype=np.int16).reshape(2, 3),
                                                    "z": np.ones(2, np.float32)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(4, len(_VALID_HOT) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_hot_frames_are_input_errors_or_consistent(flips):
    frame = bytearray(_VALID_HOT)
    for pos, value in flips:
        frame[pos] = value
    try:
        header, tensors = wire.decode(bytes(frame))
    except InputError:
        return
    # whatever decoded must account for every byte of the frame
    assert sum(t.nbytes for t in tensors.values()) <= len(frame)


def test_wire_refuses_trailing_bytes():
    frame = wire.encode({"op": "x"}, {"t": np.zeros(2, np.float32)})
    with pytest.raises(InputError):
        wire.decode(frame + b"!")


# -- config ------------------------------------------------------------------------------------
def test_toml_config_loads_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "ganglion.toml").write_text("""
device_id = "cam1"
[model]
path = "models/m.gpk"
trusted_keys = ["keys/dev.pub"]
threads = 2
[batch]
max_batch = 4
budget_ms = 1.5
[[sources]]
kind = "folder"
path = "in"
[[sinks]]
kind = "jsonl"
path = "/var/log/r.jsonl"
""")
    cfg = cfgmod.load_toml(tmp_path / "ganglion.toml").require_model()
    assert cfg.model.path == str(tmp_path / "models/m.gpk")
    assert cfg.model.trusted_keys == (str(tmp_path / "keys/dev.pub"),)
    assert cfg.sources[0].path == str(tmp_path / "in") and cfg.sinks[0].path == "/var/log/r.jsonl"
    assert cfg.batch.budget_ms == 1.5 and cfg.model.threads == 2 and cfg.device_id == "cam1"


@pytest.mark.parametrize("table, where", [
    ({"model": {"path": "m", "thread": 1}}, "model.thread"),
    ({"model": {"path": "m", "threads": "4"}}, "model.threads"),
    ({"model": {"path": "m", "allow_cpu_fallback": 1}}, "model.allow_cpu_fallback"),
    ({"model": {"path": "m"}, "workers": {"count": 0}}, "workers.count"),
    ({"model": {"path": "m"}, "workers": {"start_method": "threads"}}, "workers.start_method"),
    ({"model": {}}, "model.path"),
    ({"model": {"path": "m"}, "sinks": [{"kind": "mqtt"}]}, "telemetry.broker"),
])
def test_config_errors_name_the_key(table, where):
    with pytest.raises(UsageError) as info:
        cfgmod.from_dict(table).require_model()
    assert info.value.where == where


def test_config_replace_is_type_checked():
    cfg = cfgmod.from_dict({"model": {"path": "m"}})
    assert cfgmod.replace(cfg, "batch.max_batch", 3).batch.max_batch == 3
    with pytest.raises(UsageError):
        cfgmod.replace(cfg, "batch.max_batch", "three")
    with pytest.raises(UsageError):
        cfgmod.replace(cfg, "batch.nope", 1)


# -- queues and batching -----------------------------------------------------------------------
def _req(i, shape=(1, 4)):
    return Request("t", {"x": np.full(shape, i, np.float32)})


def test_live_queue_drops_the_oldest_and_counts_it():
    dropped = []
    q = RequestQueue(3, on_drop=dropped.append)
    for i in range(5):
        q.put_live(_req(i))
    assert [int(r.feeds["x"][0, 0]) for r in dropped] == [0, 1]
    assert [int(q.get(0).feeds["x"][0, 0]) for _ in range(3)] == [2, 3, 4]


def test_blocking_queue_waits_for_room_and_refuses_after_close():
    q = RequestQueue(1)
    assert q.put(_req(0))
    assert not q.put(_req(1), timeout=0.05)              # full: backpressure, not a drop
    threading.Timer(0.05, lambda: q.get(0)).start()
    assert q.put(_req(2), timeout=2)
    q.close()
    assert not q.put(_req(3), timeout=0.05)


def test_batcher_respects_max_batch_and_never_mixes_shapes():
    rq = RequestQueue(100)
    for i in range(5):
        rq.put(_req(i))
    rq.put(_req(9, shape=(1, 2)))
    rq.put(_req(10))
    b = Batcher(rq, max_batch=3, budget_ms=20)
    sizes = []
    while (job := b.take(0.05)) is not None:
        sizes.append([int(r.feeds["x"][0, 0]) for r in job.requests])
        assert job.feeds["x"].shape[0] == len(job.requests)
    assert sizes == [[0, 1, 2], [3, 4], [9], [10]]
    assert (b.batches, b.batched_requests) == (4, 7)


def test_greedy_batches_and_write_ahead_take_only_what_is_queued():
    rq = RequestQueue(100)
    b = Batcher(rq, max_batch=4, budget_ms=0)
    t0 = time.monotonic()
    assert b.take_ready() is None and time.monotonic() - t0 < 0.05      # never waits
    for i in range(3):
        rq.put(_req(i))
    rq.put(_req(7, shape=(1, 2)))
    rq.put(_req(8, shape=(1, 2)))
    job = b.take_ready()
    assert [int(r.feeds["x"][0, 0]) for r in job.requests] == [0, 1, 2]      # stops at the shape change
    assert job.feeds["x"].shape == (3, 4)
    job = b.take(0.05)
    assert [int(r.feeds["x"][0, 0]) for r in job.requests] == [7, 8] and job.feeds["x"].shape == (2, 2)
    assert b.take_ready() is None and len(rq) == 0


def test_batcher_waits_at_most_the_budget_for_a_lone_request():
    rq = RequestQueue(10)
    b = Batcher(rq, max_batch=8, budget_ms=30)
    threading.Timer(0.05, lambda: rq.put(_req(1))).start()
    t0 = time.monotonic()
    job = b.take(2.0)
    waited = time.monotonic() - t0
    assert len(job.requests) == 1 and 0.03 < waited < 1.0
    assert b.take(0.01) is None


def test_batcher_fills_a_batch_from_requests_arriving_within_the_budget():
    rq = RequestQueue(10)
    b = Batcher(rq, max_batch=4, budget_ms=300)
    rq.put(_req(0))
    for i in range(1, 4):
        threading.Timer(0.02 * i, lambda i=i: rq.put(_req(i))).start()
    job = b.take(1.0)
    assert [int(r.feeds["x"][0, 0]) for r in job.requests] == [0, 1, 2, 3]


# -- decoding ----------------------------------------------------------------------------------
def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_payload_formats_are_sniffed():
    info = Info()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(decode_payload(_npy(x), info)["x"], x)
    np.testing.assert_array_equal(decode_payload(x.tobytes(), info)["x"], x)
    np.testing.assert_array_equal(decode_payload(b"[[0, 1, 2, 3]]", info)["x"], x)
    np.testing.assert_array_equal(decode_payload(b'{"inputs": {"x": [[0, 1, 2, 3]]}}', info)["x"], x)
    with pytest.raises(InputError):
        decode_payload(b"\x89PNG\r\n\x1a\n" + b"broken", Info(shape=(1, 3, 8, 8)))


def test_images_are_resized_normalized_and_laid_out():
    from PIL import Image
    img = Image.fromarray(np.full((20, 30, 3), 255, np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    info = Info(shape=(1, 3, 8, 8), preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    x = decode_payload(buf.getvalue(), info)["x"]
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0, atol=1e-5)
    nhwc = image_to_tensor(open_image(buf.getvalue()), (1, 8, 8, 3), {}, "uint8")
    assert nhwc.shape == (1, 8, 8, 3) and nhwc.dtype == np.uint8 and nhwc.max() == 255


# -- metrics and systemd -----------------------------------------------------------------------
def test_metrics_window_percentiles_and_process_figures(tmp_path):
    sensor = tmp_path / "temp"
    sensor.write_text("48250\n")
    m = Metrics(thermal_path=str(sensor), queue_depth=lambda: 5)
    for v in range(1, 101):
        m.observe(v % 10 != 0, float(v))
    snap = m.snapshot()
    assert snap["latency_p50_ms"] == pytest.approx(50.5) and snap["latency_p99_ms"] == pytest.approx(99.01)
    assert snap["results"] == 90 and snap["errors"] == 10 and snap["queue_depth"] == 5
    assert snap["temperature_c"] == 48.2 and snap["rss_mb"] > 10
    again = m.snapshot()
    assert again["results"] == 0 and again["latency_p50_ms"] is None and again["total_results"] == 90


def test_sd_notify_sends_a_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1")
    assert sock.recv(100) == b"READY=1"
    sock.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert sdnotify.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None           # the watchdog is for another process


# -- result routing ----------------------------------------------------------------------------
def test_router_writes_bursts_to_blocking_sinks_and_answers_each_request_once():
    import threading as th
    from edge.daemon.messages import Result
    from edge.daemon.outbox import FanOut, MemoryOutbox
    from edge.daemon.sinks import MqttSink, ResultRouter

    class Spool(MemoryOutbox):
        def __init__(self):
            super().__init__()
            self.calls = []

        def record_many(self, kind, payloads, subtopic=None):
            self.calls.append(len(payloads))
            return super().record_many(kind, payloads, subtopic)

    spool, done = Spool(), []
    router = ResultRouter([MqttSink(FanOut(spool), "m")], Metrics())
    assert not router.inline                              # an MQTT sink may block: a thread routes
    for i in range(50):
        router.deliver(Result(Request("t", {}, {"i": i}, on_done=done.append),
                              outputs={"y": np.zeros((1, 2), np.float32)}))
    stop = th.Event()
    t = th.Thread(target=router.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 5
    while len(done) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join()
    assert len(done) == 50 and len(spool.of("results")) == 50
    assert max(spool.calls) > 1                           # written in bursts, not one fsync each
    assert [r["i"] for r in spool.of("results")] == list(range(50))


def test_router_survives_a_failing_sink():
    from edge.daemon.messages import Result
    from edge.daemon.sinks import ResultRouter

    class Full:
        name, blocking = "full", False

        def write(self, record):
            raise OSError(28, "No space left on device")

    m, done = Metrics(), []
    router = ResultRouter([Full()], m)
    router.deliver(Result(Request("t", {}, on_done=done.append), error={"code": "x"}))
    assert len(done) == 1 and m.totals["sink_errors"] == 1
