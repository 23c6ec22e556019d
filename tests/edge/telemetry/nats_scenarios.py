"""Inputs queued for an offline device on a 3-node NATS cluster while a replica lags, with another
consumer of the device's topics about (tests/edge/telemetry/test_nats_inputs.py, bench/nats_inputs_bench.py).

NATS keeps every QoS 1 message in one JetStream stream with *interest* retention (``$MQTT_msgs``,
nats-server's server/README-MQTT.md) and gives each QoS 1 subscription a JetStream consumer of it.
nats-server 2.9.10 (Debian 12) deletes a message once *a* consumer acknowledged it when the replica
that applies the acknowledgement has not stored the message yet (it lags): a consumer that had not
delivered it yet -- here the offline device's -- never does. So a second QoS 1 subscription matching
a device's input topic (``ganglion/v1/<dev>/#``) can take the device's inputs.

The scenario: the device's input session (the MqttClient settings of ``Telemetry.subscribe_input``)
goes offline; the other consumer subscribes on node 1; node 3 is paused (SIGSTOP) while ``n`` inputs
are published through node 2, then resumed; once it has caught up the device comes back.
"""
from __future__ import annotations

import threading
import time

from edge.telemetry.config import parse_broker_url
from edge.telemetry.mqtt import MqttClient
from tests.fixtures.nats import NatsCluster, mqtt_connack

RECORDS = ("status", "metrics", "events", "results/#")
# who else reads the device's topics: (topic levels under ganglion/v1/<dev>/, QoS), or nobody
OTHERS = {"alone": None,
          "records-qos1": (RECORDS, 1),      # the fleet hub, the tests: never the input topic
          "everything-qos0": (("#",), 0),    # a live view of everything: QoS 0 has no JetStream consumer
          "everything-qos1": (("#",), 1)}    # a second JetStream consumer of the inputs: the hazard


def queued_inputs(cluster: NatsCluster, device: str, other: str, n: int = 60, wait_s: float = 20.0) -> set[bytes]:
    """The inputs the device received (of ``b"input 0"`` ... ``b"input <n-1>"``)."""
    node1, node2, _ = cluster.urls
    got: set[bytes] = set()
    _session(node2, device, got).stop()              # offline: NATS queues its inputs
    observer = _observer(node1, device, OTHERS[other]) if OTHERS[other] else None
    feeder = MqttClient(parse_broker_url(node2), client_id=f"feeder-{device}").connect(30)
    lagging = cluster.nodes[2]
    lagging.pause()
    try:
        for i in range(n):
            feeder.publish_wait(f"ganglion/v1/{device}/in", b"input %d" % i, timeout=30)
    finally:
        lagging.resume()
        feeder.stop()
    _caught_up(lagging)
    session = _session(node2, device, got)
    try:
        end = time.monotonic() + wait_s
        while len(got) < n and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        session.stop()
        if observer is not None:
            observer.stop()
    return got


def _session(url: str, device: str, got: set[bytes]) -> MqttClient:
    """The device's input connection: persistent session, QoS 1, PUBACK once taken."""
    def on_input(message):
        got.add(message.payload)
        message.ack()
    client = MqttClient(parse_broker_url(url), client_id=f"ganglion-{device}-in", session_expiry=3600,
                        manual_ack=True, max_held=256)
    client.subscribe(f"ganglion/v1/{device}/in", on_input)
    client.connect(30)
    if not client.wait_granted(f"ganglion/v1/{device}/in", 60):
        raise RuntimeError("NATS did not grant the input subscription")
    return client


def _observer(url: str, device: str, spec) -> MqttClient:
    levels, qos = spec
    client = MqttClient(parse_broker_url(url), client_id=f"observer-{device}")
    for level in levels:
        client.subscribe(f"ganglion/v1/{device}/{level}", lambda m: None, qos=qos)
    client.connect(30)
    if not all(client.wait_granted(f"ganglion/v1/{device}/{level}", 60) for level in levels):
        raise RuntimeError("NATS did not grant the observer's subscriptions")
    return client


def _caught_up(node, settle: float = 3.0) -> None:
    """The resumed node answers MQTT again and has had a moment to apply what it missed (the
    deletes that lose inputs are proposed while it catches up)."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if mqtt_connack(node.host, node.mqtt_port, client_id=f"probe-{threading.get_ident()}") == 0:
                break
        except OSError:
            pass
        time.sleep(0.2)
    time.sleep(settle)
