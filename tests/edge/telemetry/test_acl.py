"""``ganglion telemetry acl`` against a real mosquitto and a real NATS cluster (its nats-auth.conf): a
device cannot publish as another, cannot read another's commands; the operator commands devices and
the hub sees the fleet; wrong passwords and strangers stay out. The same three checks run on both."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from core.errors import UsageError
from edge.telemetry import Telemetry, TelemetryConfig, acl
from edge.telemetry.config import parse_broker_url
from edge.telemetry.errors import BrokerError
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester
from tests.fixtures.broker import Mosquitto
from tests.fixtures.nats import NatsCluster


def test_hash_matches_mosquitto_format():
    line = acl.mosquitto_hash("pw", salt=b"\0" * 12)
    assert line.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(line.split("$")) == 5


def test_bad_names_are_one_usage_error():
    with pytest.raises(UsageError) as err:
        acl.accounts(["cam.1", "ok", "ok", "bad/id"], operator="ok")
    message = err.value.message
    assert err.value.code == "usage.acl" and "cam.1" in message and "bad/id" in message and "twice" in message


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The CLI writes the files once for the module."""
    out = tmp_path_factory.mktemp("acl") / "out"
    run = subprocess.run([sys.executable, "-m", "edge.cli", "telemetry", "acl", "--device", "cam1", "--device",
                          "cam2", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name in ("credentials.json", "nats-auth.conf"):
        assert oct(os.stat(out / name).st_mode & 0o777) == "0o600"
    return out, json.loads((out / "credentials.json").read_text())


class Broker:
    """What the checks need of either broker: where to connect to (node: 0, 1, 2 on NATS)."""

    def __init__(self, urls):
        self.urls = urls

    def url(self, node: int = 0) -> str:
        return self.urls[node % len(self.urls)]


@pytest.fixture(scope="module", params=["mosquitto", "nats"])
def fleet(request, written):
    out, creds = written
    if request.param == "mosquitto":
        broker = Mosquitto(out.parent / "mosquitto", extra=(out / "mosquitto.conf").read_text().splitlines())
        broker.start()
        urls, stop = [broker.url], broker.stop
    else:
        op = creds["operator"]
        cluster = NatsCluster(out.parent / "nats", extra=(out / "nats-auth.conf").read_text(),
                              login=(op["username"], op["password"])).start()
        urls, stop = cluster.urls, cluster.stop
    try:
        yield Broker(urls), creds, out
    finally:
        stop()


def _client(broker, user, password, name, node=0, **kw):
    return MqttClient(parse_broker_url(broker.url(node)), client_id=name, username=user, password=password,
                      reconnect_min=0.1, reconnect_max=0.5, **kw)


class Inbox:
    def __init__(self):
        self.topics, self.cond = [], threading.Condition()

    def __call__(self, message):
        with self.cond:
            self.topics.append(message.topic)
            self.cond.notify_all()

    def wait_for(self, topic, timeout=10.0):
        with self.cond:
            return self.cond.wait_for(lambda: topic in self.topics, timeout)


@pytest.mark.mqtt
def test_a_device_publishes_only_as_itself(fleet):
    broker, creds, _ = fleet
    hub_inbox = Inbox()
    hub = _client(broker, creds["hub"]["username"], creds["hub"]["password"], "hub", node=2)
    hub.subscribe("ganglion/v1/#", hub_inbox)
    hub.connect(30)
    assert hub.wait_granted("ganglion/v1/#", 30)
    cam1 = _client(broker, "cam1", creds["devices"]["cam1"], "ganglion-cam1").connect(30)
    try:
        cam1.publish("ganglion/v1/cam2/metrics", b"{}")           # forged: cam1 pretends to be cam2
        cam1.publish("ganglion/v1/cam2/status", b"{}", retain=True)
        cam1.publish_wait("ganglion/v1/cam1/metrics", b"{}")      # its own: allowed (and a marker)
        assert hub_inbox.wait_for("ganglion/v1/cam1/metrics")
        time.sleep(0.3)
        assert not [t for t in hub_inbox.topics if "/cam2/" in t], hub_inbox.topics
    finally:
        cam1.stop()
        hub.stop()


@pytest.mark.mqtt
def test_a_device_reads_only_its_own_commands(fleet):
    broker, creds, _ = fleet
    spy = Inbox()
    cam1 = _client(broker, "cam1", creds["devices"]["cam1"], "ganglion-cam1")
    cam1.subscribe("ganglion/v1/cam2/cmd/#", spy)               # another device's commands
    cam1.subscribe("ganglion/v1/cam1/cmd/#", spy)
    cam1.connect(30)
    assert cam1.wait_granted("ganglion/v1/cam1/cmd/#", 30)
    op = _client(broker, creds["operator"]["username"], creds["operator"]["password"], "op", node=2).connect(30)
    try:
        op.publish_wait("ganglion/v1/cam2/cmd/config/set", b'{"id": "x", "args": {}}')
        op.publish_wait("ganglion/v1/cam1/cmd/ping", b'{"id": "y", "args": {}}')
        assert spy.wait_for("ganglion/v1/cam1/cmd/ping")
        time.sleep(0.3)
        assert spy.topics == ["ganglion/v1/cam1/cmd/ping"]
    finally:
        cam1.stop()
        op.stop()


@pytest.mark.mqtt
def test_the_operator_commands_a_device_and_strangers_stay_out(fleet, tmp_path):
    broker, creds, _ = fleet
    cfg = TelemetryConfig(broker=broker.url(), username="cam2", password=creds["devices"]["cam2"])
    tm = Telemetry(cfg, "cam2", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(30) and tm.client.wait_granted("ganglion/v1/cam2/cmd/#", 30)
        with Requester(broker.url(2), username=creds["operator"]["username"],
                       password=creds["operator"]["password"], connect_timeout=30) as req:
            assert req.call("cam2", "ping", timeout=30)["result"]["pong"] is True
        for user, password in (("cam2", "wrong"), ("nobody", "x"), (None, None)):
            with pytest.raises(BrokerError):
                _client(broker, user, password, f"stranger-{user}").connect(3)
    finally:
        tm.stop(flush_timeout=0.5)


def test_rerun_keeps_passwords_and_rotate_renews_them(tmp_path):
    first = acl.accounts(["cam1"])
    acl.write(tmp_path, first)
    again = acl.accounts(["cam1", "cam3"], known=acl.read_known(tmp_path))
    assert again.devices["cam1"] == first.devices["cam1"] and again.operator == first.operator
    acl.write(tmp_path, again)
    assert [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()] == \
        ["cam1", "cam3", "ganglion-hub", "ganglion-operator"]
    assert acl.accounts(["cam1"]).devices["cam1"] != first.devices["cam1"]
