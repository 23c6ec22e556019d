"""MqttSource's logic with in-memory stand-ins (the real-broker scenarios are in test_mqtt_input.py):
paho's thread only hands over; an input is acked once answered; "try later" answers are retried
while running and left unacked when stopping."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from edge.daemon.sources import MqttSource
from tests.edge.daemon.helpers import wait_for


@dataclass
class FakeMessage:
    payload: bytes
    topic: str = "in/x"
    dup: bool = False
    response_topic: str | None = None
    correlation: bytes | None = None
    acks: list = field(default_factory=list)

    def ack(self):
        self.acks.append(1)


@dataclass
class FakeResult:
    error: dict | None = None

    @property
    def ok(self):
        return self.error is None


class FakeTelemetry:
    def __init__(self):
        self.subs = {}

    def subscribe_input(self, topic, callback):
        self.subs[topic] = callback


class FakeDaemon:
    """Answers each submit from a script of error codes (None = ok), then ok."""

    def __init__(self, script=()):
        self.script, self.calls = list(script), []
        self.stop_event = threading.Event()
        self.block = threading.Event()
        self.block.set()

    def submit(self, source, payload, meta, on_done, live=False):
        self.block.wait()            # a full queue: the source's thread waits here, not paho's
        self.calls.append((payload, meta))
        code = self.script.pop(0) if self.script else None
        on_done(FakeResult(None if code is None else {"code": code}))


def start(source):
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_subscribes_before_start_and_hands_over_without_blocking():
    tel, daemon = FakeTelemetry(), FakeDaemon()
    source = MqttSource(daemon, "in/#", tel)
    assert "in/#" in tel.subs                       # subscribed in __init__, before telemetry starts
    daemon.block.clear()                            # the daemon's queue is full
    stop, thread = start(source)
    msgs = [FakeMessage(b"%d" % i) for i in range(5)]
    for m in msgs:
        tel.subs["in/#"](m)                         # paho's thread returns at once every time
    assert not any(m.acks for m in msgs)            # nothing answered, nothing acked
    daemon.block.set()
    assert wait_for(lambda: all(m.acks == [1] for m in msgs), 5)
    assert [c[0] for c in daemon.calls] == [m.payload for m in msgs]
    meta = daemon.calls[0][1]
    assert meta == {"topic": "in/x", "input_sha256": hashlib.sha256(b"0").hexdigest()}
    stop.set()
    thread.join(5)


def test_bad_input_is_acked_and_try_later_is_retried_then_acked():
    tel = FakeTelemetry()
    daemon = FakeDaemon(["input.shape", "runtime.unavailable", None])
    source = MqttSource(daemon, "in/#", tel)
    source.RETRY_S = 0.01
    stop, thread = start(source)
    bad, later = FakeMessage(b"bad", dup=True), FakeMessage(b"later")
    tel.subs["in/#"](bad)
    tel.subs["in/#"](later)
    assert wait_for(lambda: bad.acks and later.acks, 5)
    assert [c[0] for c in daemon.calls] == [b"bad", b"later", b"later"]   # retried once
    assert daemon.calls[0][1]["redelivered"] is True
    assert later.acks == [1]
    stop.set()
    thread.join(5)


def test_an_input_caught_by_a_shutdown_is_left_unacked():
    tel = FakeTelemetry()
    daemon = FakeDaemon(["runtime.stopping"])
    daemon.stop_event.set()
    source = MqttSource(daemon, "in/#", tel)
    stop, thread = start(source)
    msg = FakeMessage(b"x")
    tel.subs["in/#"](msg)
    assert wait_for(lambda: daemon.calls, 5)
    assert not wait_for(lambda: msg.acks or len(daemon.calls) > 1, 0.3)  # no ack, no retry
    stop.set()
    thread.join(5)


def test_held_counts_received_and_not_yet_answered():
    tel = FakeTelemetry()
    daemon = FakeDaemon(["runtime.unavailable"])
    daemon.block.clear()
    source = MqttSource(daemon, "in/#", tel)
    source.RETRY_S = 0.01
    stop, thread = start(source)
    msgs = [FakeMessage(b"%d" % i) for i in range(4)]
    for m in msgs:
        tel.subs["in/#"](m)
    assert (source.held, source.held_max) == (4, 4)
    daemon.block.set()                               # the first is answered "try later", then ok
    assert wait_for(lambda: all(m.acks for m in msgs), 5)
    assert (source.held, source.held_max) == (0, 4)
    assert len(daemon.calls) == 5                    # a retry is not a second input
    stop.set()
    thread.join(5)
