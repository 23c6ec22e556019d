"""The registry from device records: status, metrics, events; foreign and malformed records ignored."""
import json

import pytest

from edge.telemetry.topics import device_topic, envelope
from fleet import views
from fleet.registry import Registry
from fleet.store import Store


@pytest.fixture
def reg(tmp_path):
    return Registry(Store(tmp_path / "f.sqlite"))


def rec(device, kind, data, seq=1):
    return device_topic(device, kind), envelope(None if kind == "status" else seq, 0.0, device, kind, data)


def test_status_metrics_and_events_build_the_row_and_the_change_stream(reg):
    changes = reg.ingest(*rec("cam1", "status", {"state": "online", "model": "m", "model_version": "2",
                                                 "model_sha256": "ab" * 32, "tags": {"site": "a"}}), 10.0)
    assert [c[0] for c in changes] == ["device", "device"]                 # online, and a new version
    reg.ingest(*rec("cam1", "metrics", {"latency_p95_ms": 4.0, "results": 9, "errors": 1, "rss_mb": 50.0}), 11.0)
    reg.ingest(*rec("cam1", "events", {"event": "restart"}), 12.0)
    row = reg.devices["cam1"]
    assert row["online"] and row["tags"] == {"site": "a"} and row["metrics_at"] == 11.0 and row["last_seen"] == 12.0
    assert row["health"]["p95_ms"] == 4.0 and row["health"]["error_rate"] == 0.1
    assert reg.select("tag:site=a") == ["cam1"] and reg.select("tag:site=b") == []
    assert reg.ingest(*rec("cam1", "status", {"state": "offline", "reason": "lost"}), 13.0)[0][2]["online"] is False
    assert views.devices(reg, online=False)[0]["id"] == "cam1"


@pytest.mark.parametrize("topic, payload", [
    ("ganglion/v1/_fleet/status", envelope(None, 0.0, "_fleet", "status", {"state": "online"})),   # the hub
    ("ganglion/v1/cam1/status", b"not json"),
    ("ganglion/v1/cam1/metrics", json.dumps({"data": [1, 2]}).encode()),
    ("ganglion/v1/cam1/results/m", envelope(1, 0.0, "cam1", "results", {"ok": True})),
    ("other/topic", b"{}"),
])
def test_foreign_or_malformed_records_are_ignored(reg, topic, payload):
    assert reg.ingest(topic, payload, 1.0) == [] and reg.devices == {}


def test_flush_persists_rows_for_the_next_hub(tmp_path):
    reg = Registry(Store(tmp_path / "f.sqlite"))
    reg.ingest(*rec("cam1", "status", {"state": "online", "model_version": "1"}), 1.0)
    assert reg.flush() == 1
    reg.store.close()
    again = Registry(Store(tmp_path / "f.sqlite"))
    assert again.devices["cam1"]["model_version"] == "1" and again.devices["cam1"]["online"] is True


def test_duplicate_records_are_dropped_by_seq_until_the_device_restarts(reg):
    reg.ingest(*rec("cam1", "status", {"state": "online", "since": 1.0}), 1.0)
    assert reg.ingest(*rec("cam1", "events", {"event": "crash"}, seq=5), 2.0)
    assert reg.ingest(*rec("cam1", "events", {"event": "crash"}, seq=5), 3.0) == []        # redelivered
    assert reg.ingest(*rec("cam1", "events", {"event": "crash"}, seq=4), 3.0) == []        # older
    assert len(reg.events["cam1"]) == 1
    reg.ingest(*rec("cam1", "status", {"state": "online", "since": 9.0}), 4.0)              # a new run
    assert reg.ingest(*rec("cam1", "events", {"event": "restart"}, seq=1), 5.0)


def test_simulator_seq_never_repeats_across_restarts(tmp_path):
    from fleet.sim import SeqBook
    book = SeqBook(tmp_path / "seq.json", ["a", "b"])
    taken = [book.take("a") for _ in range(3)]
    again = SeqBook(tmp_path / "seq.json", ["a", "b"])        # as after a SIGKILL: nothing saved since
    assert taken == [1, 2, 3] and again.take("a") > 3 and again.take("b") > 0


def test_read_api_overview_and_change_stream(reg):
    for i, version in enumerate(["1", "1", "2"]):
        for change in reg.ingest(*rec(f"cam{i}", "status", {"state": "online", "model_version": version}), 1.0):
            reg.store.change(*change)
    reg.ingest(*rec("cam2", "status", {"state": "offline"}), 2.0)
    assert views.overview(reg, reg.store) == {"devices": 3, "online": 2, "offline": 1,
                                              "versions": {"1": 2, "2": 1}, "deployments": {}}
    stream = views.changes(reg.store, since=0)
    assert [c["id"] for c in stream] == sorted(c["id"] for c in stream) and len(stream) == 6
    assert views.changes(reg.store, since=stream[3]["id"], limit=1) == [stream[4]]
    assert [d["id"] for d in views.devices(reg, version="1")] == ["cam0", "cam1"]
