"""NATS bench: inputs queued for an offline device, lost or not, by who else reads its topics.

    .venv/bin/python bench/nats_inputs_bench.py [--runs 6] [--count 60] [--json out.json]

NATS keeps every QoS 1 message in one JetStream stream with *interest* retention (``$MQTT_msgs``,
nats-server's server/README-MQTT.md) and gives each QoS 1 subscription a JetStream consumer of it.
nats-server 2.9.10 (Debian 12) deletes a message once *a* consumer acknowledged it when the replica
that applies the acknowledgement has not stored the message yet (it lags): a consumer that had not
delivered it yet -- here the offline device's -- never does. So a second QoS 1 subscription matching
a device's input topic (``ganglion/v1/<dev>/#``) can take the device's inputs (docs/cluster.md).

Each run starts a fresh 3-node cluster (tests/fixtures/nats.py) and plays one scenario per kind of
other consumer, interleaved: the device's input session (the MqttClient settings of
``Telemetry.subscribe_input``) goes offline; the other consumer subscribes on node 1; node 3 is paused
(SIGSTOP) while COUNT inputs are published through node 2, then resumed; once it has caught up the
device comes back and gets 45 s (more than NATS's 30 s ack wait, so late is not counted as lost).
Kinds: "alone", "records-qos1" (status/metrics/events/results at QoS 1, as the fleet hub and the
tests read), "everything-qos0" (ganglion/v1/<dev>/# at QoS 0: no JetStream consumer) and
"everything-qos1" (ganglion/v1/<dev>/# at QoS 1: a second JetStream consumer of the inputs).
Prints one JSON object (the numbers of the inputs lost) and a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.telemetry.config import parse_broker_url  # noqa: E402
from edge.telemetry.mqtt import MqttClient  # noqa: E402
from tests.fixtures.nats import NatsCluster, mqtt_connack  # noqa: E402

RECORDS = ("status", "metrics", "events", "results/#")
# who else reads the device's topics: (topic levels under ganglion/v1/<dev>/, QoS), or nobody
OTHERS = {"alone": None,
          "records-qos1": (RECORDS, 1),      # the fleet hub, the tests: never the input topic
          "everything-qos0": (("#",), 0),    # a live view of everything: QoS 0 has no JetStream consumer
          "everything-qos1": (("#",), 1)}    # a second JetStream consumer of the inputs: the hazard


def queued_inputs(cluster: NatsCluster, device: str, other: str, n: int = 60, wait_s: float = 45.0) -> set[bytes]:
    """The inputs the device received (of ``b"input 0"`` ... ``b"input <n-1>"``) within ``wait_s``
    of its return."""
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


def one_run(run: int, count: int) -> dict[str, list[int]]:
    """The inputs lost (their numbers) per kind of other consumer, on one fresh cluster."""
    with tempfile.TemporaryDirectory(prefix="nats-inputs-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats").start()
        try:
            lost = {}
            for other in OTHERS:
                got = queued_inputs(cluster, f"b{run}-{other}", other, count)
                lost[other] = [i for i in range(count) if b"input %d" % i not in got]
            return lost
        finally:
            cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    runs = [one_run(i, a.count) for i in range(a.runs)]
    results = {"count": a.count, "runs": runs,
               "summary": {o: {"runs_with_loss": sum(bool(r[o]) for r in runs), "lost": sum(len(r[o]) for r in runs),
                               "published": a.count * len(runs)} for o in OTHERS}}
    print(json.dumps(results, indent=2))
    print("\n| other consumer | runs with a loss | inputs lost / published |")
    print("|---|---|---|")
    for other, s in results["summary"].items():
        print(f"| {other} | {s['runs_with_loss']} of {len(runs)} | {s['lost']} / {s['published']} |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
