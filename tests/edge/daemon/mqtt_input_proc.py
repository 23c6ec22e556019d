"""A daemon with a deliberately slow model and an MQTT input topic, for the backpressure and
crash scenarios (tests/edge/daemon/test_mqtt_input.py). Real Telemetry, real worker process;
only the model is a stand-in (``crashy.slow``: y = 2x after a sleep), so the queue fills up."""
import argparse
import sys

from edge.daemon.app import Daemon
from edge.daemon.config import from_dict


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--spool", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--queue", type=int, default=2)
    ap.add_argument("--receive-max", type=int, default=4)
    a = ap.parse_args()
    cfg = from_dict({
        "model": {"path": "slow-stand-in"}, "device_id": a.device,
        "workers": {"count": 1, "shutdown_s": 2.0},
        "batch": {"max_batch": 1, "queue_size": a.queue},
        "metrics": {"interval_s": 30.0},
        "telemetry": {"broker": a.broker, "spool": a.spool, "input_receive_max": a.receive_max,
                      "reconnect_min": 0.1, "reconnect_max": 0.5},
        "sources": [{"kind": "mqtt", "topic": a.topic}], "sinks": [{"kind": "mqtt"}]}).require_model()
    daemon = Daemon(cfg, factory="tests.edge.daemon.crashy:slow",
                    factory_args={"delay_s": a.delay})
    return daemon.run(lambda d: print("ready", flush=True) or 0)


if __name__ == "__main__":
    sys.exit(main())
