"""Telemetry records through a real mosquitto: envelope, order, status and Last Will, overflow."""
import time

import pytest

from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.errors import BrokerError
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.config import parse_broker_url

pytestmark = pytest.mark.mqtt


@pytest.fixture
def device(mosquitto, tmp_path):
    made = []

    def make(device_id="dev1", **cfg):
        tm = Telemetry(TelemetryConfig(broker=mosquitto.url, **cfg), device_id, tmp_path / f"{device_id}.db")
        made.append(tm)
        return tm
    yield make
    for tm in made:
        tm.stop(flush_timeout=0.5)


def test_records_arrive_in_order_with_seq_ts_device(mosquitto, device, collector_factory):
    col = collector_factory(mosquitto.url, "ganglion/v1/dev1/#")
    tm = device().start()
    assert tm.wait_connected(10)
    sent = []
    for i in range(300):
        kind = ("metrics", "events", "results")[i % 3]
        sent.append(tm.record(kind, {"i": i}, subtopic="mnv2" if kind == "results" else None))
    sent += tm.record_many("results", [{"i": 300 + k} for k in range(20)], subtopic="mnv2")
    assert sent == list(range(1, 321))
    assert tm.flush(20)
    assert col.wait_for(lambda: len(col.seqs()) >= 320)
    records = [r for r in col.records() if r["seq"] is not None]
    assert [r["seq"] for r in records] == sent                     # exactly once, in order
    assert {r["device"] for r in records} == {"dev1"}
    assert [r["data"]["i"] for r in records] == list(range(320))
    topics = {m.topic for m in col.messages}
    assert {"ganglion/v1/dev1/metrics", "ganglion/v1/dev1/events", "ganglion/v1/dev1/results/mnv2"} <= topics
    metrics = [r for r in records if r["kind"] == "metrics"]
    assert metrics[0]["data"]["telemetry"]["connected"] is True    # the spool's own numbers ride along
    assert tm.stats()["spool_depth"] == 0


def test_status_is_retained_online_then_offline_on_clean_stop(mosquitto, device, collector_factory):
    tm = device("cam7")
    tm.record("status", {"model": "digits", "version": "1.2"})
    tm.start()
    assert tm.wait_connected(10)
    # the online status goes out just after "connected": once a first subscriber has it, the broker
    # holds it, and a subscriber that comes later can only get it retained
    first = collector_factory(mosquitto.url, "ganglion/v1/cam7/status", persistent=False)
    assert first.wait_for(lambda: any(r["data"]["state"] == "online" for r in first.records()))
    late = collector_factory(mosquitto.url, "ganglion/v1/cam7/status", persistent=False)
    assert late.wait_for(lambda: late.records())                   # retained: a late subscriber sees it
    status = late.records()[-1]
    assert status["data"]["state"] == "online" and status["data"]["model"] == "digits"
    assert late.messages[-1].retain and status["seq"] is None
    tm.stop()
    assert late.wait_for(lambda: late.records()[-1]["data"]["state"] == "offline")
    assert late.records()[-1]["data"]["reason"] == "stopped"


def test_overflow_drops_oldest_and_reports_it(mosquitto, device, collector_factory, tmp_path):
    tm = device("small", spool_max_records=20)
    for i in range(50):                                            # not started: no broker yet
        tm.record("metrics", {"i": i})
    assert tm.stats()["spool_dropped"] >= 30
    col = collector_factory(mosquitto.url, "ganglion/v1/small/#")
    tm.start()
    assert tm.flush(20)
    assert col.wait_for(lambda: any(r["kind"] == "events" for r in col.records()))
    events = [r for r in col.records() if r["kind"] == "events"]
    assert events[0]["data"]["event"] == "spool_overflow" and events[0]["data"]["dropped_total"] >= 30
    seqs = col.seqs()
    assert seqs == sorted(seqs) and min(seqs) > 30                 # the oldest went, the newest stayed


def test_input_subscription_and_unknown_broker(mosquitto, device):
    tm = device().start()
    got = []
    tm.subscribe("ganglion/v1/dev1/in/#", got.append)
    assert tm.wait_connected(10)
    pub = MqttClient(parse_broker_url(mosquitto.url), client_id="pub").connect()
    pub.publish_wait("ganglion/v1/dev1/in/frames", b"\x00\x01")
    pub.stop()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got and got[0].payload == b"\x00\x01"
    closed = MqttClient(parse_broker_url("mqtt://127.0.0.1:1"), client_id="nobody", reconnect_max=1)
    with pytest.raises(BrokerError) as err:
        closed.connect(timeout=1.0)
    assert "refused" in err.value.message.lower()
