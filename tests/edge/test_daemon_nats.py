"""The broker-cluster scenario (issue 11) on a real 3-node NATS JetStream cluster (MQTT 3.1.1 only;
tests/fixtures/nats.py).

``ganglion run`` on node 1 with the failover list (node 1, node 2), a consumer on node 3, 500 inputs
fed through node 2; node 1 is killed (-9) half-way. Every input is answered and every telemetry
record arrives (seq check; NATS is at least once, so duplicates are allowed and dropped by seq),
signed commands with reply-to work from node 3 -- dotted verbs included (their topic levels,
topics.py) -- the retained status is seen cluster-wide, and so is the Last Will when the daemon is
killed. Timeouts are generous: on a loaded 2-core machine a JetStream R3 cluster stalls for seconds.

The consumer watches the device's records only, never its input topic: on nats-server 2.9 a second
QoS 1 subscription matching the inputs (``ganglion/v1/<dev>/#``) made NATS delete inputs the device
had not received yet, under load (docs/cluster.md; bench/nats_inputs_bench.py).
"""
import hashlib
import json
import os
import subprocess
import threading
import time

import numpy as np
import pytest

from edge.telemetry import Telemetry, TelemetryConfig, TelemetryError
from edge.telemetry.requester import Requester
from core import keys
from tests.edge import models
from tests.fixtures import logged
from tests.edge.test_daemon_mqtt import GANGLION, Watcher, _gpk, _npy

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(300)]
DEV = "clusterdev"
N_INPUTS = 500
RECORDS = ("status", "metrics", "events", "results/#")     # what a fleet consumer reads: not ../in


def test_send_file_and_dotted_verbs_on_nats(nats_cluster, tmp_path):
    """A chunked transfer (deploy.begin/.chunk/.commit) through node 3 to a device on node 2."""
    node1, node2, node3 = nats_cluster.urls
    tm = Telemetry(TelemetryConfig(broker=node2), "natsfile", tmp_path / "s.db")
    tm.register_transfer("deploy", lambda path, info, args: {"sha256": info["sha256"], "size": info["size"]})
    tm.start()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(40_000))
    try:
        assert tm.wait_connected(60)
        with Requester(node3, connect_timeout=30) as req:
            reply = req.send_file("natsfile", "deploy", blob, chunk_size=8192, timeout=60)
        assert reply["ok"] and reply["result"] == {"sha256": hashlib.sha256(blob.read_bytes()).hexdigest(),
                                                   "size": 40_000}
        assert tm.client.connected              # NATS did not close the connection on a topic
    finally:
        tm.stop(flush_timeout=1)


def test_daemon_fails_over_from_a_killed_node_losing_nothing(nats_cluster, tmp_path, request):
    node1, node2, node3 = nats_cluster.urls
    priv, pub = keys.generate(tmp_path / "ops.key")
    config = tmp_path / "daemon.toml"
    config.write_text(f'[telemetry]\ncommand_keys = ["{pub}"]\nbroker_failback_s = 3600\n')
    model = _gpk(tmp_path / "dense.gpk", seed=0)
    # the consumer is subscribed before the daemon starts: MQTT keeps no record nobody subscribed to
    # (with the daemon started first, its seq 1 was lost now and then on an idle machine)
    watcher = Watcher(node3, device=DEV, levels=RECORDS)
    feeder = Watcher(node2, device="nats-feeder")
    for client in (watcher.client, feeder.client):        # stopped even when the test fails
        request.addfinalizer(client.stop)
    log = tmp_path / "daemon.log"
    proc = logged.spawn([GANGLION, "run", "--config", str(config), "--model", str(model), "--broker", node1,
                         "--broker", node2, "--device-id", DEV, "--mqtt-input", f"ganglion/v1/{DEV}/in",
                         "--spool", str(tmp_path / "spool.db"), "--metrics-interval", "0.5"], log)
    xs = np.random.default_rng(1).normal(size=(N_INPUTS, 4)).astype(np.float32)
    answered = lambda w: {r["data"]["input_sha256"] for r in w.of("results")}      # noqa: E731
    try:
        assert watcher.wait(lambda w: any(s["data"].get("state") == "online" and s["data"].get("model")
                                          for s in w.of("status")), timeout=60), _tail(proc, log)
        feed_log = []
        feed = threading.Thread(target=_feed, args=(feeder, xs, feed_log), daemon=True)
        feed.start()
        assert watcher.wait(lambda w: len(answered(w)) >= N_INPUTS // 2, timeout=90), len(answered(watcher))
        nats_cluster.nodes[0].kill()                      # kill -9 node 1, half-way
        killed_at = len(answered(watcher))
        feed.join(120)
        assert watcher.wait(lambda w: len(answered(w)) >= N_INPUTS, timeout=120), (len(answered(watcher)), feed_log)
        assert killed_at < N_INPUTS, "all inputs were answered before the kill: nothing was tested"
        _commands_from_node3(node3, priv)
        assert watcher.wait(lambda w: any(e["data"].get("event") == "broker_switch" for e in w.of("events")))
        # a consumer that arrives on node 3 now still gets the retained status: online, via node 2.
        # QoS 0, as a dashboard would: NATS refuses QoS 1 subscriptions (each needs a JetStream
        # consumer) for a while after the kill (10-15 s seen under load; the likely cause of this
        # wait's earlier time-outs); a QoS 0 subscription needs no consumer
        late = Watcher(node3, device=DEV, levels=("status",), qos=0)
        request.addfinalizer(late.client.stop)
        assert late.wait(lambda w: any(s["data"]["state"] == "online" for s in w.of("status")), timeout=60)
    finally:
        proc.kill()                                        # kill -9 the daemon: its Last Will must fire
        proc.wait(60)
        err = logged.tail(log, 10**7)
        print(err[-4000:])                                 # shown by pytest when the test failed
    assert watcher.wait(lambda w: w.of("status")[-1]["data"].get("reason") == "lost", timeout=60), err[-2000:]
    assert "MQTT broker switch for ganglion-clusterdev:" in err and "COMMANDS ARE NOT SIGNED" not in err, err[-3000:]
    _check_stream(watcher, xs, node1, node2)
    nats_cluster.nodes[0].start()                          # leave the cluster whole for later tests


def _feed(feeder, xs, log):
    """A steady stream of inputs, still flowing at the kill. A producer on an at-least-once broker
    re-sends what was not acknowledged (NATS may cut a client off while the cluster re-forms)."""
    for x in xs:
        for _ in range(5):
            try:
                feeder.client.publish_wait(f"ganglion/v1/{DEV}/in", _npy(x[None]), timeout=20)
                break
            except TelemetryError as exc:
                log.append(exc.message)
        time.sleep(0.004)


def _commands_from_node3(node3, priv):
    env = dict(os.environ, GANGLION_BROKER="", GANGLION_COMMAND_KEY=str(priv))    # signed by default
    for verb, args, check in (("config.set", {"key": "batch.max_batch", "value": 4}, lambda r: r["value"] == 4),
                              ("config.get", {"key": "batch.max_batch"}, lambda r: r["value"] == 4),
                              ("ping", {}, lambda r: r["pong"] is True)):
        sent = subprocess.run([GANGLION, "telemetry", "send", "--broker", node3, DEV, verb, "--args", json.dumps(args),
                               "--timeout", "90"], capture_output=True, text=True, timeout=150, env=env)
        assert sent.returncode == 0, (verb, sent.stderr[-3000:])
        reply = json.loads(sent.stdout)
        assert reply["ok"] and reply["verb"] == verb and reply["corr"] and check(reply["result"]), reply


def _check_stream(watcher, xs, node1, node2):
    """Every input answered right; every record seen (duplicates dropped by seq); one switch event."""
    first = {}
    for r in watcher.of("results"):
        first.setdefault(r["data"]["input_sha256"], r["data"])
    want = {hashlib.sha256(_npy(x[None])).hexdigest(): y for x, y in zip(xs, models.reference(xs))}
    assert set(first) == set(want) and all(r["ok"] for r in first.values())
    np.testing.assert_allclose([first[h]["outputs"]["y"] for h in want], list(want.values()), rtol=1e-5, atol=1e-5)
    records = watcher.of("results") + watcher.of("events") + watcher.of("metrics")
    by_seq = {}
    for r in records:
        by_seq.setdefault(r["seq"], r)
    assert sorted(by_seq) == list(range(1, max(by_seq) + 1))             # none lost, from the first
    # NATS may refuse connections to node 2 while its JetStream re-forms, so the device can try
    # node 1 again before it settles: the first switch leaves node 1, the last lands on node 2
    switches = [r["data"] for r in by_seq.values() if r["data"].get("event") == "broker_switch"]
    assert switches[0]["from"] == node1 and switches[-1]["to"] == node2, switches
    negotiated = [r["data"] for r in by_seq.values() if r["data"].get("event") == "mqtt_protocol"]
    assert [(e["version"], e["requested"]) for e in negotiated] == [("3.1.1", "auto")]


def _tail(proc, log) -> str:
    return "daemon not online" if proc.poll() is None else proc.stderr.read()[-2000:]
