"""Broker addresses with an IPv6 literal reach a real mosquitto listening on the IPv6 loopback, in
the URL form (``mqtt://[::1]:PORT``) and the short form (``[::1]:PORT``). The parser's forms and
errors are unit-tested in test_config.py."""
from __future__ import annotations

import socket
import threading
import uuid

import pytest

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from tests.fixtures.broker import Mosquitto

pytestmark = pytest.mark.mqtt


@pytest.fixture
def mosquitto_v6(tmp_path):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
            port = sock.getsockname()[1]
    except OSError as exc:        # a host without IPv6: nothing to test here
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    broker = Mosquitto(tmp_path / "mosquitto-v6", port=port)
    broker.host = "::1"           # the fixture's probe connects here
    broker.config.write_text(broker.config.read_text().replace(f"listener {port} 127.0.0.1",
                                                               f"listener {port} ::1"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("form", ["mqtt://[::1]:{port}", "[::1]:{port}"])
def test_an_ipv6_broker_address_connects(mosquitto_v6, form):
    url = parse_broker_url(form.format(port=mosquitto_v6.port))
    assert (url.host, url.port, str(url)) == ("::1", mosquitto_v6.port, f"mqtt://[::1]:{mosquitto_v6.port}")
    got, arrived = [], threading.Event()
    rx = MqttClient(url, client_id=f"rx-{uuid.uuid4().hex[:6]}")
    rx.subscribe("v6/#", lambda m: (got.append(m.payload), arrived.set()))
    rx.connect(10)
    tx = MqttClient(url, client_id=f"tx-{uuid.uuid4().hex[:6]}").connect(10)
    try:
        tx.publish_wait("v6/x", b"over IPv6")
        assert arrived.wait(10) and got == [b"over IPv6"]
    finally:
        tx.stop()
        rx.stop()
