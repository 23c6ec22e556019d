"""Broker bench: records/s and failover time, two mosquittos vs the 3-node NATS cluster, in one run.

    .venv/bin/python bench/broker_bench.py [--count 2000] [--rate 200] [--runs 3] [--json out.json]

Each run, interleaved (mosquitto pair, then NATS cluster, fresh brokers every run):
  throughput  a device (Telemetry, spool synchronous=NORMAL) records COUNT metrics as fast as it can
              on broker 1; time from the first record() until a consumer on the last broker has
              seen every seq (end to end; on NATS the consumer sits on node 3, so records cross
              the cluster). NATS speaks MQTT 3.1.1 only: the device negotiates it (auto).
  failover    the device streams RATE records/s with the failover list (broker 1, broker 2); broker 1
              is killed (-9). "switch" = kill -> the device connected to broker 2; "gap" = kill ->
              the consumer sees the first record recorded after the kill; "lost" counts seqs never
              seen (must be 0), "dups" records seen twice (allowed: at least once).
The mosquitto pair is two independent brokers (no bridge): the consumer subscribes to both.
Prints one JSON object and a table (medians over the runs; NATS/mosquitto ratios).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.telemetry import Telemetry, TelemetryConfig  # noqa: E402
from edge.telemetry.config import parse_broker_url  # noqa: E402
from edge.telemetry.mqtt import MqttClient  # noqa: E402
from tests.edge.daemon.helpers import wait_for  # noqa: E402
from tests.fixtures.broker import Mosquitto  # noqa: E402
from tests.fixtures.nats import NatsCluster  # noqa: E402

PAYLOAD = {"latency_ms": {"p50": 1.9, "p95": 2.4}, "throughput": 480.0, "errors": 0}


class Consumer:
    """Subscribes to one device on every given broker; keeps (seq, arrival time)."""

    def __init__(self, urls: list[str], device: str):
        self.seen: dict[int, float] = {}
        self.dups = 0
        self.lock = threading.Lock()
        self.clients = []
        for url in urls:
            client = MqttClient(parse_broker_url(url), client_id=f"bench-c-{uuid.uuid4().hex[:8]}",
                                reconnect_min=0.1, reconnect_max=0.5)
            client.subscribe(f"ganglion/v1/{device}/metrics", self._on)
            client.connect(60)
            self.clients.append(client)

    def _on(self, message) -> None:
        seq, now = json.loads(message.payload)["seq"], time.perf_counter()
        with self.lock:
            if seq in self.seen:
                self.dups += 1
            else:
                self.seen[seq] = now

    def wait_for(self, seqs: list[int], timeout: float) -> bool:
        return wait_for(lambda: all(s in self.seen for s in seqs), timeout, step=0.01)

    def stop(self) -> None:
        for client in self.clients:
            client.stop()


def throughput(device_url: str, consumer_urls: list[str], folder: Path, count: int) -> dict:
    name = f"tput{uuid.uuid4().hex[:6]}"
    consumer = Consumer(consumer_urls, name)
    # spool synchronous=NORMAL: with FULL one fsync per record() bounds the rate, not the broker
    tm = Telemetry(TelemetryConfig(broker=device_url, spool_sync="normal"), name, folder / f"{name}.db").start()
    try:
        if not tm.wait_connected(60):
            raise RuntimeError(f"device not connected to {device_url}")
        start = time.perf_counter()
        seqs = [tm.record("metrics", PAYLOAD) for _ in range(count)]
        complete = consumer.wait_for(seqs, 120)
        elapsed = max(consumer.seen.get(s, time.perf_counter()) for s in seqs) - start
        return {"records": count, "complete": complete, "seconds": round(elapsed, 3),
                "records_per_s": round(count / elapsed, 1), "dups": consumer.dups}
    finally:
        tm.stop(flush_timeout=1)
        consumer.stop()


def failover(urls: list[str], consumer_urls: list[str], kill, folder: Path, rate: float) -> dict:
    name = f"fo{uuid.uuid4().hex[:6]}"
    consumer = Consumer(consumer_urls, name)
    cfg = TelemetryConfig(brokers=tuple(urls[:2]), reconnect_min=0.1, reconnect_max=1.0, keepalive=10,
                          broker_failback_s=3600)
    tm = Telemetry(cfg, name, folder / f"{name}.db").start()
    stop, recorded = threading.Event(), []

    def produce():
        while not stop.is_set():
            recorded.append((tm.record("metrics", PAYLOAD), time.perf_counter()))
            time.sleep(1 / rate)
    producer = threading.Thread(target=produce, daemon=True)
    try:
        if not tm.wait_connected(60):
            raise RuntimeError("device not connected")
        producer.start()
        time.sleep(2.0)
        killed = time.perf_counter()
        kill()
        second = str(parse_broker_url(urls[1]))
        while not (tm.client.connected and str(tm.client.url) == second) and time.perf_counter() - killed < 120:
            time.sleep(0.01)
        switched = time.perf_counter() - killed
        time.sleep(3.0)
        stop.set()
        producer.join(5)
        tm.flush(60)
        seqs = [s for s, _ in recorded]
        got_all = consumer.wait_for(seqs, 60)
        after = [s for s, t in recorded if t > killed]
        gap = min((consumer.seen[s] for s in after if s in consumer.seen), default=float("nan")) - killed
        return {"switch_s": round(switched, 3), "gap_s": round(gap, 3), "records": len(seqs),
                "lost": sum(1 for s in seqs if s not in consumer.seen), "dups": consumer.dups,
                "complete": got_all, "switches": tm.stats()["broker_switches"]}
    finally:
        stop.set()
        tm.stop(flush_timeout=1)
        consumer.stop()


def run_mosquitto(folder: Path, count: int, rate: float) -> dict:
    brokers = [Mosquitto(folder / f"mosq{i}").start() for i in (1, 2)]
    try:
        urls = [b.url for b in brokers]
        out = {"throughput": throughput(urls[0], urls[:1], folder, count)}
        out["failover"] = failover(urls, urls, lambda: brokers[0].proc.kill(), folder, rate)
        return out
    finally:
        for b in brokers:
            b.stop()


def run_nats(folder: Path, count: int, rate: float) -> dict:
    cluster = NatsCluster(folder / "nats").start()
    try:
        urls = cluster.urls
        out = {"throughput": throughput(urls[0], [urls[2]], folder, count)}
        out["failover"] = failover(urls, [urls[2]], cluster.nodes[0].kill, folder, rate)
        return out
    finally:
        cluster.stop()


def summarize(runs: list[dict]) -> dict:
    def med(key, sub):
        values = [r[key][sub] for r in runs if r[key][sub] == r[key][sub]]     # drop NaN
        return round(statistics.median(values), 3) if values else None
    return {"records_per_s": med("throughput", "records_per_s"), "switch_s": med("failover", "switch_s"),
            "gap_s": med("failover", "gap_s"), "lost": sum(r["failover"]["lost"] for r in runs),
            "dups": sum(r["failover"]["dups"] + r["throughput"]["dups"] for r in runs),
            "complete": all(r["failover"]["complete"] and r["throughput"]["complete"] for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="records in the throughput burst")
    ap.add_argument("--rate", type=float, default=200.0, help="records/s during the failover")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    runs = {"mosquitto": [], "nats": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs):                  # interleaved: the machine's load hits both alike
            runs["mosquitto"].append(run_mosquitto(Path(tmp) / f"m{i}", a.count, a.rate))
            runs["nats"].append(run_nats(Path(tmp) / f"n{i}", a.count, a.rate))
    summary = {k: summarize(v) for k, v in runs.items()}
    results = {"count": a.count, "rate": a.rate, "runs": runs, "summary": summary}
    print(json.dumps(results, indent=2))
    m, n = summary["mosquitto"], summary["nats"]
    print("\n| broker | records/s | ratio | switch s | gap s | lost | dups | complete |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in (("mosquitto 2.0.11 x2 (MQTT 5)", m), ("NATS 2.9.10 3-node R3 (MQTT 3.1.1)", n)):
        ratio = round(s["records_per_s"] / m["records_per_s"], 2) if m["records_per_s"] else None
        print(f"| {name} | {s['records_per_s']} | {ratio} | {s['switch_s']} | {s['gap_s']} | {s['lost']} | "
              f"{s['dups']} | {s['complete']} |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=2))
    return 0 if m["lost"] == 0 and n["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
