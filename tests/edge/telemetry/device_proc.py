"""A stand-in device for crash tests: records `count` metrics at `rate`/s through Telemetry and prints
"seq N" after each record() returned (= the record is durable in the spool), "drained" once the
spool is empty, then lingers so the test can SIGKILL it."""
import argparse
import sys
import time

from edge.telemetry import Telemetry, TelemetryConfig


def main() -> int:
    ap = argparse.ArgumentParser()
    for name, kind in (("--broker", str), ("--spool", str), ("--device", str), ("--count", int),
                       ("--rate", float), ("--keepalive", int), ("--linger", float)):
        ap.add_argument(name, type=kind, required=True)
    a = ap.parse_args()
    tm = Telemetry(TelemetryConfig(broker=a.broker, keepalive=a.keepalive, reconnect_min=0.1,
                                   reconnect_max=1.0), a.device, a.spool)
    tm.record("status", {"model": "digits"})
    tm.start()
    if tm.wait_connected(10):
        print("connected", flush=True)
    for i in range(a.count):
        seq = tm.record("metrics", {"i": i})
        print(f"seq {seq}", flush=True)
        time.sleep(1.0 / a.rate)
    if tm.flush(30):
        print("drained", flush=True)
    time.sleep(a.linger)
    tm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
