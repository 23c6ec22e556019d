"""MQTT input delivery: messages/s received through the adapter, auto-ack vs manual in-order acks.

    .venv/bin/python bench/mqtt_input_bench.py [--count 5000] [--runs 3] [--json out.json]

Starts its own mosquitto on a free loopback port (tests/fixtures/broker.py). A sender publishes
COUNT QoS 1 messages (already queued at the broker in a persistent session), then the receiver
connects and the clock runs until the last one arrived (and, with manual acks, was acked):
  auto        paho acks on receipt (what ``Telemetry.subscribe`` does)        -- the ceiling
  manual-64   ``subscribe_input``'s way: a hand-off thread acks, in order, Receive Maximum 64
  manual-8    the same with Receive Maximum 8
Prints one JSON object and a table; ratios are against ``auto`` (median of RUNS).
Note: mosquitto 2.0.11 over-releases its send quota on in-order acks (docs/telemetry.md), so the
manual rows measure the ack path more than the broker's window on that version.
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

PAYLOAD = bytes(range(256)) * 4        # 1 KiB, about a small tensor


def one_run(broker: Mosquitto, count: int, receive_max: int | None) -> dict:
    url = parse_broker_url(broker.url)
    cid = f"bench-rx-{uuid.uuid4().hex[:6]}"
    manual = receive_max is not None
    done, handoff, got = threading.Event(), queue.Queue(), [0]

    def on_message(msg):
        if manual:
            handoff.put(msg)              # paho's thread only hands over
            return
        got[0] += 1
        if got[0] == count:
            done.set()

    def acker():                          # the source's thread: "answered" at once, then ack
        n = 0
        while n < count:
            handoff.get().ack()
            n += 1
        done.set()

    # The session and its subscription first, then the backlog, then the clock.
    first = MqttClient(url, client_id=cid, session_expiry=600, manual_ack=manual, receive_maximum=receive_max)
    first.subscribe("bench/in", lambda m: None)
    first.connect(10)
    first.stop()
    sender = MqttClient(url, client_id=f"bench-tx-{uuid.uuid4().hex[:6]}").connect(10)
    for _ in range(count - 1):
        sender.publish("bench/in", PAYLOAD)
    sender.publish_wait("bench/in", PAYLOAD, timeout=60)
    sender.stop()
    rx = MqttClient(url, client_id=cid, session_expiry=600, manual_ack=manual, receive_maximum=receive_max)
    rx.subscribe("bench/in", on_message)
    if manual:
        threading.Thread(target=acker, daemon=True).start()
    start = time.perf_counter()
    rx.connect(10)
    ok = done.wait(120)
    elapsed = time.perf_counter() - start
    over = rx.over_receive_max
    rx.stop()
    return {"ok": ok, "seconds": round(elapsed, 4), "per_s": round(count / elapsed, 1), "over_receive_max": over}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    modes = {"auto": None, "manual-64": 64, "manual-8": 8}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        try:
            for _ in range(a.runs):                    # interleaved, so drift hits every mode alike
                for name, rmax in modes.items():
                    rows.setdefault(name, []).append(one_run(broker, a.count, rmax))
        finally:
            broker.stop()
    med = {name: statistics.median(r["per_s"] for r in runs) for name, runs in rows.items()}
    out = {"count": a.count, "runs": rows, "median_per_s": med,
           "ratio_vs_auto": {k: round(v / med["auto"], 3) for k, v in med.items()}}
    print(json.dumps(out))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=2))
    print(f"{'mode':<12}{'msgs/s (median)':>18}{'min':>10}{'max':>10}{'vs auto':>10}{'over RM':>10}")
    for name, runs in rows.items():
        rates = [r["per_s"] for r in runs]
        print(f"{name:<12}{med[name]:>18.0f}{min(rates):>10.0f}{max(rates):>10.0f}"
              f"{med[name] / med['auto']:>10.2f}{max(r['over_receive_max'] for r in runs):>10}")
    return 0 if all(r["ok"] for runs in rows.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
