"""Broker failover (failover.py, mqtt.py, publisher.py): the decision as data, then a device on two
real mosquittos that loses the first mid-stream, moves to the second, and comes back -- every
record arrives (seq check over both brokers), one broker_switch event and one log line per switch."""
import logging
import threading
import time

import pytest

from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.config import parse_broker_url
from edge.telemetry.failover import BrokerList
from edge.telemetry.requester import Requester
from tests.edge.daemon.helpers import wait_for
from tests.fixtures.broker import free_port

A, B, C = (parse_broker_url(f"mqtt://127.0.0.1:{p}") for p in (1001, 1002, 1003))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("urls, fails, index", [
    ([A], 10, 0),                  # one broker: never moves
    ([A, B], 1, 0),                # one failure is a glitch
    ([A, B], 2, 1),
    ([A, B, C], 4, 2),
    ([A, B], 4, 0),                # wraps around
])
def test_moves_on_after_failures_in_a_row(urls, fails, index):
    brokers = BrokerList(urls, failover_after=2)
    events = [e for _ in range(fails) if (e := brokers.failed("refused"))]
    assert brokers.index == index and brokers.current == urls[index]
    assert [e["to"] for e in events] == [str(urls[i % len(urls)]) for i in range(1, len(events) + 1)]
    assert all(e["event"] == "broker_switch" and "refused" in e["reason"] for e in events)


def test_a_success_resets_the_count():
    brokers = BrokerList([A, B], failover_after=2)
    brokers.failed("x")
    brokers.connected()
    assert brokers.failed("x") is None and brokers.index == 0


def test_comes_back_to_the_first_broker_that_answers_at_most_once_per_period():
    clock = Clock()
    brokers = BrokerList([A, B, C], failback_s=30, clock=clock)
    brokers.move_to(2, "test")
    probed = []

    def reachable(url):
        probed.append(url)
        return url == B
    assert brokers.failback(reachable) is None and probed == []          # not due yet
    clock.now = 31
    event = brokers.failback(reachable)
    assert probed == [A, B] and brokers.current == B and event["to"] == str(B)
    clock.now = 40
    assert brokers.failback(lambda url: True) is None                    # due again only at 61
    clock.now = 62
    assert brokers.failback(lambda url: True)["to"] == str(A) and brokers.index == 0
    assert not brokers.failback_due()


@pytest.mark.mqtt
def test_device_fails_over_and_back_without_losing_a_record(mosquitto_pair, collector_factory, tmp_path, caplog):
    first, second = mosquitto_pair
    watch = [collector_factory(b.url, "ganglion/v1/fodev/#") for b in mosquitto_pair]
    cfg = TelemetryConfig(brokers=(first.url, second.url), broker_failback_s=1.0, reconnect_min=0.1,
                          reconnect_max=0.5, keepalive=5)
    tm = Telemetry(cfg, "fodev", tmp_path / "spool.db").start()
    caplog.set_level(logging.WARNING, logger="ganglion.telemetry.mqtt")
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            tm.record("metrics", {"n": 1})
            time.sleep(0.005)
    producer = threading.Thread(target=produce, daemon=True)
    try:
        assert tm.wait_connected(10)
        producer.start()
        time.sleep(0.5)
        first.stop()                                   # the preferred broker goes away mid-stream
        assert wait_for(lambda: _on(tm, second), 30)
        time.sleep(0.5)
        first.start()                                  # ... and comes back: the device returns
        assert wait_for(lambda: _on(tm, first), 30)
        time.sleep(0.3)
        stop.set()
        producer.join(5)
        assert tm.flush(30)
        last = tm.stats()["last_seq"]
        seen = lambda: {r["seq"] for c in watch for r in c.records() if isinstance(r.get("seq"), int)}  # noqa: E731
        want = set(range(1, last + 1))
        assert wait_for(lambda: seen() >= want, 20), sorted(want - seen())[:20]
        switches = [r["data"] for c in watch for r in c.records("/events") if r["data"].get("event") == "broker_switch"]
        by_to = {s["to"]: s for s in switches}                     # an event may reach both brokers' consumers
        assert set(by_to) == {str(parse_broker_url(second.url)), str(parse_broker_url(first.url))}
        assert tm.stats()["broker_switches"] == 2
        lines = [r for r in caplog.records if "MQTT broker switch for ganglion-fodev:" in r.getMessage()]
        assert len(lines) == 2, [r.getMessage() for r in lines]
    finally:
        stop.set()
        tm.stop(flush_timeout=1)


@pytest.mark.mqtt
def test_tools_take_the_next_broker_when_the_first_does_not_answer(mosquitto, tmp_path):
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url), "fotool", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(10)
        with Requester([f"mqtt://127.0.0.1:{free_port()}", mosquitto.url], connect_timeout=5) as req:
            assert req.client.url == parse_broker_url(mosquitto.url)
            assert req.call("fotool", "ping")["result"]["pong"] is True
    finally:
        tm.stop(flush_timeout=0.5)


def _on(tm, broker) -> bool:
    """The device is connected to ``broker`` (a Mosquitto)."""
    return tm.stats()["broker"] == str(parse_broker_url(broker.url)) and tm.client.connected
