"""MQTT 3.1.1 mode (issue 11 item 1): the adapter's version choice and fallback on real brokers
(mosquitto speaks 5 and 3.1.1, the NATS cluster 3.1.1 only), and commands whose reply route rides
in the signed JSON when MQTT 5 properties are absent."""
import json
import socket
import threading
import time
import uuid

import pytest

from core import keys
from core.errors import UsageError
from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.config import parse_broker_url
from edge.telemetry.errors import BrokerError
from edge.telemetry.mqtt import MqttClient, drop_session
from edge.telemetry.requester import Requester

pytestmark = pytest.mark.mqtt


def client(url, **kw):
    events = []
    c = MqttClient(parse_broker_url(url), client_id=f"t-{uuid.uuid4().hex[:8]}", on_protocol=events.append, **kw)
    return c, events


@pytest.mark.parametrize("version, expect", [("auto", "3.1.1"), ("3.1.1", "3.1.1")])
def test_nats_negotiates_311_and_says_why(nats_cluster, version, expect):
    c, events = client(nats_cluster.urls[0], mqtt_version=version)
    c.connect(15)
    try:
        assert c.protocol == expect and len(events) == 1
        assert events[0]["version"] == expect and events[0]["requested"] == version
        assert ("CONNACK 0x01" in events[0]["reason"]) == (version == "auto"), events[0]
    finally:
        c.stop()


def test_mqtt5_pinned_on_nats_fails_with_a_hint_about_the_version(nats_cluster):
    c, events = client(nats_cluster.urls[1], mqtt_version="5")
    with pytest.raises(BrokerError) as err:
        c.connect(2)
    assert "Unsupported protocol version" in err.value.message and "--mqtt-version" in err.value.hint
    assert events == [] and c.protocol == "5"


@pytest.mark.parametrize("version, expect", [("auto", "5"), ("5", "5"), ("3.1.1", "3.1.1")])
def test_mosquitto_speaks_what_is_asked(mosquitto, version, expect):
    c, events = client(mosquitto.url, mqtt_version=version)
    c.connect(10)
    try:
        assert c.protocol == expect and events[0]["version"] == expect
        assert events[0]["reason"] == ("the broker accepted MQTT 5" if version == "auto"
                                       else f"mqtt_version = {version!r} (set explicitly)")
    finally:
        c.stop()


def test_bad_version_is_a_usage_error():
    with pytest.raises(UsageError) as err:
        MqttClient(parse_broker_url("mqtt://127.0.0.1:1"), client_id="x", mqtt_version="4")
    assert err.value.code == "usage.mqtt_version"
    with pytest.raises(UsageError) as err:
        TelemetryConfig(mqtt_version="3")
    assert err.value.where == "telemetry.mqtt_version"


class HangUpOnMqtt5:
    """A loopback server that closes an MQTT 5 CONNECT without a CONNACK and accepts 3.1.1: the
    second fallback signal (brokers that do not even answer). Counts what it saw."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.levels = []
        self.open = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            head = conn.recv(64)
            level = head[8] if len(head) > 8 else None       # fixed header 2 + "\0\4MQTT" 6 -> level
            self.levels.append(level)
            if level == 4:
                conn.sendall(b"\x20\x02\x00\x00")
                self.open.append(conn)
            else:
                conn.close()

    def close(self):
        self.sock.close()
        for conn in self.open:
            conn.close()


def test_auto_falls_back_when_mqtt5_connections_close_without_connack():
    server = HangUpOnMqtt5()
    c, events = client(f"mqtt://127.0.0.1:{server.port}", reconnect_min=0.05, reconnect_max=0.1)
    try:
        c.connect(10)
        assert c.protocol == "3.1.1" and "without a CONNACK" in events[0]["reason"]
        assert server.levels[:3] == [5, 5, 4], server.levels     # two hang-ups, then 3.1.1
    finally:
        c.stop()
        server.close()


def test_commands_on_nats_carry_the_reply_route_in_the_signed_json(nats_cluster, tmp_path):
    private, public = tmp_path / "ops.key", tmp_path / "ops.pub"
    keys.generate(private, public)
    cfg = TelemetryConfig(broker=nats_cluster.urls[0], command_keys=(str(public),))
    tm = Telemetry(cfg, "nats-cmd", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(20) and tm.client.protocol == "3.1.1"
        with Requester(nats_cluster.urls[2], connect_timeout=15) as req:
            assert req.in_envelope
            reply = req.call("nats-cmd", "ping", key=keys.load_private(private), timeout=15)
            assert reply["ok"] and reply["result"]["pong"] is True and len(reply["corr"]) == 32
            # the route is signed: a command whose reply_to was changed after signing is refused
            signed = json.loads(_signed_ping(req, private, "nats-cmd"))
            signed["reply_to"] = req.reply_topic + "x"
            req.client.subscribe(signed["reply_to"], req._on_reply)
            refused = req.call_raw("nats-cmd", "ping", json.dumps(signed).encode(), timeout=15,
                                   corr=signed["corr"].encode())
            assert refused["error"]["code"] == "command.unauthorized"
        assert tm.flush(10)
        assert tm.stats()["mqtt_version"] == "3.1.1"
    finally:
        tm.stop(flush_timeout=1)


def _signed_ping(req, private, device):
    from edge.telemetry.signing import sign_command
    from edge.telemetry.topics import command_topic
    command = {"id": uuid.uuid4().hex, "args": {}, "reply_to": req.reply_topic, "corr": uuid.uuid4().hex}
    return json.dumps(sign_command(keys.load_private(private), command_topic(device, "ping"), command))


def test_311_on_mosquitto_both_ends_pinned(mosquitto, tmp_path):
    """Explicit 3.1.1 on a broker that could do 5: the envelope route works there as well."""
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url, mqtt_version="3.1.1"), "pinned", tmp_path / "s.db")
    tm.start()
    try:
        assert tm.wait_connected(10)
        with Requester(mosquitto.url, mqtt_version="3.1.1") as req:
            reply = req.call("pinned", "ping", timeout=10)
        assert reply["ok"] and reply["device"] == "pinned" and "corr" in reply
    finally:
        tm.stop(flush_timeout=1)


def test_311_input_session_persists_until_drop_session(nats_cluster):
    """No Session Expiry under 3.1.1: clean_session=False keeps what the device did not take,
    and drop_session is the clean-up that makes the broker forget it."""
    url, cid, topic = parse_broker_url(nats_cluster.urls[0]), f"in-{uuid.uuid4().hex[:8]}", "jobs/persist"
    got = []

    def inputs():
        c = MqttClient(url, client_id=cid, session_expiry=3600, manual_ack=True, max_held=16)
        c.subscribe(topic, lambda m: (got.append(m.payload), m.ack()))
        return c.connect(15)

    inputs().stop()                                        # the session and its subscription exist
    pub, _ = client(nats_cluster.urls[2], mqtt_version="3.1.1")
    pub.connect(15)
    pub.publish_wait(topic, b"while-away", timeout=10)
    c = inputs()
    _wait(lambda: got == [b"while-away"])
    c.stop()
    assert drop_session(url, cid) == "3.1.1"
    pub.publish_wait(topic, b"after-drop", timeout=10)     # no session: nobody keeps this for cid
    c = inputs()
    time.sleep(1.5)
    c.stop()
    pub.stop()
    assert got == [b"while-away"]


def _wait(predicate, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
