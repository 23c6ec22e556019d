"""Manual acknowledgement on the MQTT adapter: PUBACKs in arrival order, bound to their connection,
the Receive Maximum sent in CONNECT, and a persistent session that resends what was not acked."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import AckWindow, MqttClient


def test_acks_go_out_in_arrival_order():
    sent = []
    window = AckWindow(sent.append)
    first, second, third = window.add(11), window.add(12), window.add(13)
    third()
    second()
    assert sent == [] and len(window) == 3        # 11 is not done: nothing may overtake it
    first()
    assert sent == [11, 12, 13] and len(window) == 0
    first()                                       # twice: nothing more
    assert sent == [11, 12, 13]


def test_an_ack_from_before_a_reconnect_is_dropped():
    sent = []
    window = AckWindow(sent.append)
    stale = window.add(5)
    assert window.reset() == 1
    fresh = window.add(5)                         # the broker resends it, maybe with the same id
    stale()
    assert sent == []
    fresh()
    assert sent == [5]


class Inbox:
    def __init__(self, url, client_id, *, receive_maximum=2, ack=False):
        self.got, self.cond, self.ack = [], threading.Condition(), ack
        self.client = MqttClient(parse_broker_url(url), client_id=client_id, manual_ack=True,
                                 receive_maximum=receive_maximum, session_expiry=600,
                                 reconnect_min=0.1, reconnect_max=0.5)
        self.client.subscribe("in/#", self._on)
        self.client.connect(10)

    def _on(self, msg):
        with self.cond:
            self.got.append(msg)
            self.cond.notify_all()
        if self.ack:
            msg.ack()

    def wait(self, n, timeout=10.0):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.got) < n and time.monotonic() < end:
                self.cond.wait(0.1)
            return len(self.got)


@pytest.mark.mqtt
def test_receive_maximum_holds_deliveries_and_the_session_resends_unacked(mosquitto):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    sender = MqttClient(parse_broker_url(mosquitto.url), client_id=f"tx-{device}").connect(10)
    try:
        inbox = Inbox(mosquitto.url, device, receive_maximum=2)
        for i in range(6):
            sender.publish_wait("in/x", b"%d" % i)
        assert inbox.wait(3, timeout=1.0) == 2     # the broker stops at our Receive Maximum
        assert [m.payload for m in inbox.got] == [b"0", b"1"] and not any(m.dup for m in inbox.got)
        inbox.client.stop()                        # gone without acking: the session keeps them
        again = Inbox(mosquitto.url, device, receive_maximum=2, ack=True)
        assert again.wait(6) == 6
        assert [m.payload for m in again.got] == [b"%d" % i for i in range(6)]
        assert [m.dup for m in again.got[:2]] == [True, True]
        assert again.client.acks is not None and len(again.client.acks) == 0
        # A barrier: once the broker acknowledges this, it has read every PUBACK before it (one
        # TCP stream, read in order); without it the stop could race the last PUBACKs.
        again.client.publish_wait("sync/x", b"")
        again.client.stop()
        third = Inbox(mosquitto.url, device, receive_maximum=2)
        assert third.wait(1, timeout=1.0) == 0, [(m.payload, m.dup) for m in third.got]   # all acked
        third.client.stop()
    finally:
        sender.stop()


@pytest.mark.mqtt
def test_a_subscription_left_in_the_session_does_not_block_later_acks(mosquitto):
    """An earlier run subscribed to in/old; this run only handles in/new. The session still routes
    in/old to us: that message is acked and dropped, so in/new's PUBACKs (in order) are not held."""
    device = f"dev-{uuid.uuid4().hex[:6]}"
    url = parse_broker_url(mosquitto.url)
    sender = MqttClient(url, client_id=f"tx-{device}").connect(10)
    old = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=2, session_expiry=600)
    old.subscribe("in/old", lambda m: None)
    old.connect(10)
    old.stop()
    try:
        sender.publish_wait("in/old", b"stale")
        got = []
        new = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=2, session_expiry=600)
        new.subscribe("in/new", lambda m: (got.append(m.payload), m.ack()))
        new.connect(10)
        for i in range(4):
            sender.publish_wait("in/new", b"%d" % i)
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"0", b"1", b"2", b"3"] and len(new.acks) == 0
        new.stop()
    finally:
        sender.stop()


@pytest.mark.mqtt
def test_a_handler_that_raises_does_not_hold_the_window(mosquitto):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    url = parse_broker_url(mosquitto.url)
    sender = MqttClient(url, client_id=f"tx-{device}").connect(10)
    seen = []

    def handler(msg):
        seen.append(msg.payload)
        if msg.payload == b"boom":
            raise RuntimeError("a bug in a handler")
        msg.ack()
    client = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=1, session_expiry=600)
    client.subscribe("in/#", handler)
    client.connect(10)
    try:
        for payload in (b"boom", b"a", b"b"):
            sender.publish_wait("in/x", payload)
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [b"boom", b"a", b"b"] and len(client.acks) == 0
    finally:
        client.stop()
        sender.stop()


class Holder:
    """An input handler that keeps every message until the test answers it."""

    def __init__(self):
        self.msgs, self.lock = [], threading.Lock()

    def __call__(self, msg):
        with self.lock:
            self.msgs.append(msg)

    def take(self) -> list:
        with self.lock:
            msgs, self.msgs = self.msgs, []
        return msgs


def wait_until(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


@pytest.mark.mqtt
def test_the_input_gate_pauses_at_the_bound_and_resumes_at_half(mosquitto):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    url = parse_broker_url(mosquitto.url)
    sender = MqttClient(url, client_id=f"tx-{device}").connect(10)
    holder, events = Holder(), []
    # Receive Maximum above the bound, so the broker sends past it for sure (mosquitto 2.0.11
    # would only after the first acks; TelemetryConfig does not allow this combination).
    client = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=8, max_held=4,
                        session_expiry=600, reconnect_min=0.1, reconnect_max=0.5, on_flow=events.append)
    client.subscribe("in/#", holder)
    client.connect(10)
    try:
        for i in range(40):
            sender.publish_wait("in/x", b"%d" % i)
        assert wait_until(lambda: client.gate.paused and not client.connected)
        first = holder.take()
        assert len(first) == 4 and client.gate.held == 4      # the bound, whatever the broker sent
        assert events[0]["event"] == "input_paused" and events[0]["limit"] == 4
        first[0].ack()
        time.sleep(0.3)
        assert not client.connected and not holder.msgs        # 3 held: still above half
        first[1].ack()                                         # 2 held: reconnect, take again
        assert wait_until(lambda: holder.msgs)
        seen = [m.payload for m in first]
        for m in first[2:]:
            m.ack()
        while wait_until(lambda: holder.msgs, timeout=3):
            for m in holder.take():
                seen.append(m.payload)
                m.ack()
        assert sorted(seen, key=int) == [b"%d" % i for i in range(40)]     # each once, none lost
        assert client.gate.stats()["pauses"] >= 1 and client.gate.held == 0
    finally:
        client.stop()
        sender.stop()


@pytest.mark.mqtt
def test_a_stop_during_a_pause_does_not_reconnect(mosquitto):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    url = parse_broker_url(mosquitto.url)
    sender = MqttClient(url, client_id=f"tx-{device}").connect(10)
    holder = Holder()
    client = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=8, max_held=2,
                        session_expiry=600, reconnect_min=0.1, reconnect_max=0.5)
    client.subscribe("in/#", holder)
    client.connect(10)
    try:
        for i in range(6):
            sender.publish_wait("in/x", b"%d" % i)
        assert wait_until(lambda: client.gate.paused)
        client.stop()
        for m in holder.take():
            m.ack()                          # answers after the stop: no reconnect may follow
        time.sleep(0.5)
        assert not client.connected and client._client._thread is None
    finally:
        client.stop()
        sender.stop()


@pytest.mark.mqtt
def test_pause_and_resume_over_mutual_tls(mosquitto_tls):
    """The resume builds a new connection with the same TLS context (CA, client certificate)."""
    device = f"dev-{uuid.uuid4().hex[:6]}"
    url = parse_broker_url(mosquitto_tls.url)
    tls = dict(ca_file=mosquitto_tls.ca_file, cert_file=mosquitto_tls.client_cert, key_file=mosquitto_tls.client_key)
    sender = MqttClient(url, client_id=f"tx-{device}", **tls).connect(10)
    holder = Holder()
    client = MqttClient(url, client_id=device, manual_ack=True, receive_maximum=8, max_held=3, session_expiry=600,
                        reconnect_min=0.1, reconnect_max=0.5, **tls)
    client.subscribe("in/#", holder)
    client.connect(10)
    try:
        for i in range(12):
            sender.publish_wait("in/x", b"%d" % i)
        seen = []
        while wait_until(lambda: holder.msgs, timeout=3):
            for m in holder.take():
                seen.append(m.payload)
                m.ack()
        assert sorted(seen, key=int) == [b"%d" % i for i in range(12)]
        assert client.gate.stats()["pauses"] >= 1 and client.gate.held_max <= 3
    finally:
        client.stop()
        sender.stop()
