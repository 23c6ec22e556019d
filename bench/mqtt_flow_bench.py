"""MQTT input flow control: how many inputs wait in the device's memory during a backlog, and what
the client-side bound (``input_max_held``, edge/telemetry/inflow.py) costs in throughput.

    .venv/bin/python bench/mqtt_flow_bench.py [--count 2000] [--work-ms 0.5] [--runs 3] [--json out.json]

Starts its own mosquitto on a free loopback port (tests/fixtures/broker.py). COUNT distinct QoS 1
inputs of 1 KiB are queued at the broker for a persistent session; then the receiver connects and a
consumer thread "answers" each input after WORK_MS (a stand-in for the model) and acks it, as the
daemon's MQTT source does. The clock runs until every input was answered. Rows:
  unbounded-RM      Receive Maximum RM only (what the daemon did before the gate)
  bounded-RM/L      the same plus the gate: at most L held, reconnect at L/2 (L = 4 x RM is the default)
Columns: the most inputs held unanswered at once (counted by the consumer: received - answered),
the bound, inputs/s and its ratio to the unbounded row of the same RM, pauses, inputs run twice.
Median of RUNS per row, rows interleaved. Prints one JSON object and a table.
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.telemetry.config import parse_broker_url  # noqa: E402
from edge.telemetry.mqtt import MqttClient  # noqa: E402
from tests.fixtures.broker import Mosquitto  # noqa: E402

PAD = bytes(1000)
ROWS = [("unbounded-8", 8, None), ("bounded-8/32", 8, 32),
        ("unbounded-64", 64, None), ("bounded-64/256", 64, 256)]


def payload(i: int) -> bytes:
    return b"%08d" % i + PAD


def one_run(broker: Mosquitto, count: int, work_s: float, receive_max: int, max_held: int | None) -> dict:
    url = parse_broker_url(broker.url)
    cid = f"bench-flow-{uuid.uuid4().hex[:6]}"
    handoff: queue.Queue = queue.Queue()
    lock = threading.Lock()
    state = {"held": 0, "held_max": 0}
    seen: dict[bytes, int] = {}

    def on_message(msg):                     # paho's thread: count and hand over
        with lock:
            state["held"] += 1
            state["held_max"] = max(state["held_max"], state["held"])
        handoff.put(msg)

    first = MqttClient(url, client_id=cid, session_expiry=600, manual_ack=True, receive_maximum=receive_max)
    first.subscribe("bench/flow", lambda m: None)
    first.connect(10)
    first.stop()                             # the session (and its subscription) stays at the broker
    sender = MqttClient(url, client_id=f"{cid}-tx").connect(10)
    for i in range(count - 1):
        sender.publish("bench/flow", payload(i))
    sender.publish_wait("bench/flow", payload(count - 1), timeout=60)
    sender.stop()

    rx = MqttClient(url, client_id=cid, session_expiry=600, manual_ack=True, receive_maximum=receive_max,
                    max_held=max_held, reconnect_min=0.05, reconnect_max=0.5)
    rx.subscribe("bench/flow", on_message)
    start = time.perf_counter()
    rx.connect(10)
    while len(seen) < count:
        msg = handoff.get(timeout=60)
        time.sleep(work_s)                   # the model
        seen[msg.payload] = seen.get(msg.payload, 0) + 1
        with lock:
            state["held"] -= 1
        msg.ack()
    elapsed = time.perf_counter() - start
    stats = rx.gate.stats()
    rx.stop()
    return {"held_max": state["held_max"], "seconds": elapsed, "per_s": count / elapsed,
            "pauses": stats["pauses"], "run_twice": sum(n - 1 for n in seen.values()),
            "over_receive_max": rx.over_receive_max}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--work-ms", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        try:
            for _ in range(args.runs):               # interleaved, so drift hits every row alike
                for name, rm, held in ROWS:
                    runs[name].append(one_run(broker, args.count, args.work_ms / 1000, rm, held))
        finally:
            broker.stop()
    rows = {}
    for name, rm, held in ROWS:
        r = runs[name]
        rows[name] = {"receive_max": rm, "bound": held, "runs": len(r),
                      "held_max": max(x["held_max"] for x in r),
                      "per_s": statistics.median(x["per_s"] for x in r),
                      "pauses": statistics.median(x["pauses"] for x in r),
                      "run_twice": max(x["run_twice"] for x in r),
                      "over_receive_max": statistics.median(x["over_receive_max"] for x in r)}
    for name, row in rows.items():
        base = rows[f"unbounded-{row['receive_max']}"]["per_s"]
        row["ratio"] = round(row["per_s"] / base, 3)
    report = {"count": args.count, "work_ms": args.work_ms, "payload_bytes": len(payload(0)), "rows": rows}
    print(json.dumps(report))
    print(f"\n{'row':<16}{'held max':>10}{'bound':>8}{'inputs/s':>10}{'ratio':>8}{'pauses':>8}{'run twice':>11}")
    for name, row in rows.items():
        print(f"{name:<16}{row['held_max']:>10}{str(row['bound'] or '-'):>8}{row['per_s']:>10.0f}"
              f"{row['ratio']:>8.2f}{row['pauses']:>8.0f}{row['run_twice']:>11}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
