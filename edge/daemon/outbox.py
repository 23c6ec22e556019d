"""Where the daemon's records go: MQTT telemetry, a log, or memory (tests).

Everything the daemon reports -- status, metrics, results, events -- is a ``record(kind, payload,
subtopic)`` call, the same signature as ``edge.telemetry.Telemetry.record``. The daemon depends on
this small interface only, so it runs without a broker (log outbox) and its logic is tested with
the in-memory outbox; the MQTT path is the telemetry package's real client.
"""
from __future__ import annotations

import json
import sys
import threading
import time


class MemoryOutbox:
    """Keeps records in a list (unit tests)."""

    def __init__(self):
        self.records: list[tuple[str, dict, str | None]] = []
        self._lock = threading.Lock()

    def record(self, kind: str, payload: dict, subtopic: str | None = None) -> int:
        with self._lock:
            self.records.append((kind, payload, subtopic))
            return len(self.records)

    def record_many(self, kind: str, payloads: list[dict], subtopic: str | None = None) -> list[int]:
        return [self.record(kind, p, subtopic) for p in payloads]

    def of(self, kind: str) -> list[dict]:
        with self._lock:
            return [p for k, p, _ in self.records if k == kind]


class LogOutbox:
    """Writes events (and optionally metrics) as JSON lines to a stream, stderr by default."""

    def __init__(self, stream=None, kinds=("events", "metrics", "status")):
        self.stream, self.kinds = stream or sys.stderr, set(kinds)
        self._lock = threading.Lock()
        self._seq = 0

    def record(self, kind: str, payload: dict, subtopic: str | None = None) -> int:
        with self._lock:
            self._seq += 1
            if kind in self.kinds:
                line = json.dumps({"kind": kind, "ts": round(time.time(), 3), **payload}, default=str)
                self.stream.write(line + "\n")
                self.stream.flush()
            return self._seq


class FanOut:
    """Sends each record to several outboxes (the telemetry client and the local log)."""

    def __init__(self, *outboxes):
        self.outboxes = [o for o in outboxes if o is not None]

    def record(self, kind: str, payload: dict, subtopic: str | None = None) -> int:
        seq = 0
        for box in self.outboxes:
            seq = box.record(kind, payload, subtopic) or seq
        return seq

    def record_many(self, kind: str, payloads: list[dict], subtopic: str | None = None) -> list[int]:
        """Batches go to outboxes that take them whole (the telemetry spool: one fsync)."""
        seqs: list[int] = []
        for box in self.outboxes:
            many = getattr(box, "record_many", None)
            got = many(kind, payloads, subtopic) if many else [box.record(kind, p, subtopic) for p in payloads]
            seqs = list(got) if any(got) else seqs
        return seqs
