"""Telemetry throughput: records/s with QoS 1 through the disk spool vs raw paho, side by side.

    .venv/bin/python bench/telemetry_bench.py [--count 5000] [--rate 500] [--duration 10] [--json out.json]

Starts its own mosquitto on a free loopback port (tests/fixtures/broker.py), then measures:
  burst   COUNT records as fast as possible, time until the last PUBACK:
            raw paho QoS 1 (same in-flight window, no spool)   -- the ceiling
            Telemetry, spool synchronous=FULL                  -- the default (power-loss safe)
            Telemetry, spool synchronous=NORMAL                -- crash safe only
            Telemetry, FULL, record_many() of 32               -- one fsync per micro-batch
  steady  RATE records/s for DURATION s through Telemetry (FULL): achieved rate, end-to-end latency
          record() -> subscriber (p50/p95/p99), and the deepest the spool got.
Prints one JSON object and a table; ratios are against raw paho.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402  (the bench measures paho itself; edge/ uses mqtt.py)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge.telemetry import Telemetry, TelemetryConfig  # noqa: E402
from tests.fixtures.broker import Mosquitto  # noqa: E402

PAYLOAD = {"latency_ms": {"p50": 1.9, "p95": 2.4, "p99": 3.1}, "throughput": 480.0, "queue": 3, "errors": 0}


def raw_paho(broker: Mosquitto, count: int, window: int) -> dict:
    acked = threading.Semaphore(0)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    client.on_publish = lambda c, u, mid, rc, props: acked.release()
    client.max_inflight_messages_set(window)
    client.connect(broker.host, broker.port)
    client.loop_start()
    body = json.dumps({"seq": 0, "ts": 0.0, "device": "raw", "kind": "metrics", "data": PAYLOAD}).encode()
    start = time.perf_counter()
    for _ in range(count):
        client.publish("ganglion/v1/raw/metrics", body, qos=1)
    for _ in range(count):
        acked.acquire()
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return {"records": count, "seconds": round(elapsed, 3), "records_per_s": round(count / elapsed, 1)}


def telemetry_burst(broker: Mosquitto, folder: Path, count: int, sync: str, batch: int = 1) -> dict:
    name = f"burst-{sync}-{batch}"
    tm = Telemetry(TelemetryConfig(broker=broker.url, spool_sync=sync), name, folder / f"{name}.db")
    tm.start()
    tm.wait_connected(10)
    start = time.perf_counter()
    for _ in range(count // batch):
        if batch == 1:
            tm.record("metrics", PAYLOAD)
        else:      # one transaction (one fsync) per batch, as a micro-batch's results would be
            tm.record_many("results", [PAYLOAD] * batch, subtopic="bench")
    recorded = time.perf_counter() - start
    ok = tm.flush(120)
    elapsed = time.perf_counter() - start
    tm.stop()
    count = count // batch * batch
    return {"records": count, "seconds": round(elapsed, 3), "records_per_s": round(count / elapsed, 1),
            "record_call_us": round(recorded / count * 1e6, 1), "all_acked": ok}


def steady(broker: Mosquitto, folder: Path, rate: float, duration: float) -> dict:
    from edge.telemetry.config import parse_broker_url
    from edge.telemetry.mqtt import MqttClient

    sent_at: dict[int, float] = {}
    arrived: list[tuple[int, float]] = []     # matched after the run: a reply may beat sent_at[seq] = ...

    def on_msg(m):
        arrived.append((json.loads(m.payload)["seq"], time.perf_counter()))
    sub = MqttClient(parse_broker_url(broker.url), client_id="bench-sub")
    sub.subscribe("ganglion/v1/steady/metrics", on_msg)
    sub.connect()
    tm = Telemetry(TelemetryConfig(broker=broker.url), "steady", folder / "steady.db").start()
    tm.wait_connected(10)
    depth, n, start = 0, 0, time.perf_counter()
    while (now := time.perf_counter()) - start < duration:
        due = int((now - start) * rate)
        while n < due:
            t = time.perf_counter()
            sent_at[tm.record("metrics", PAYLOAD)] = t
            n += 1
        depth = max(depth, tm.stats()["spool_depth"])
        time.sleep(0.001)
    tm.flush(60)
    time.sleep(0.5)
    tm.stop()
    sub.stop()
    lat = [(t - sent_at[seq]) * 1000 for seq, t in arrived if seq in sent_at]
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
    return {"target_per_s": rate, "achieved_per_s": round(n / duration, 1), "received": len(lat), "sent": n,
            "latency_ms_p50": round(q[49], 2), "latency_ms_p95": round(q[94], 2), "latency_ms_p99": round(q[98], 2),
            "max_spool_depth": depth}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ganglion-bench-"))
    broker = Mosquitto(folder / "broker", persistence=False).start()
    try:
        window = TelemetryConfig().inflight
        results = {"raw_paho_qos1": raw_paho(broker, a.count, window),
                   "telemetry_spool_full": telemetry_burst(broker, folder, a.count, "full"),
                   "telemetry_spool_normal": telemetry_burst(broker, folder, a.count, "normal"),
                   "telemetry_spool_full_batch32": telemetry_burst(broker, folder, a.count, "full", batch=32),
                   "steady": steady(broker, folder, a.rate, a.duration), "inflight_window": window}
    finally:
        broker.stop()
    print(json.dumps(results, indent=2))
    raw = results["raw_paho_qos1"]["records_per_s"]
    print(f"\n{'burst (' + str(a.count) + ' records, QoS 1)':<36}{'records/s':>12}{'vs raw':>9}")
    for name in ("raw_paho_qos1", "telemetry_spool_full", "telemetry_spool_normal", "telemetry_spool_full_batch32"):
        r = results[name]["records_per_s"]
        print(f"{name:<36}{r:>12.0f}{r / raw:>9.2f}")
    s = results["steady"]
    print(f"\nsteady {s['target_per_s']:.0f}/s for {a.duration:g}s: achieved {s['achieved_per_s']:.0f}/s, "
          f"received {s['received']}/{s['sent']}, latency p50/p95/p99 {s['latency_ms_p50']}/"
          f"{s['latency_ms_p95']}/{s['latency_ms_p99']} ms, max spool depth {s['max_spool_depth']}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
