"""The fleet view behind ``ganglion telemetry watch``: fold status/metrics/events into one row per device.

Reads only what devices publish (DESIGN.md topics). From metrics it understands the daemon's names
(edge/daemon/metrics.py): ``latency_p95_ms`` (or ``latency_ms: {"p95": ...}``), ``throughput`` (per
second), ``total_errors`` (a running count; ``errors`` is taken as a running count when there is
no total), ``model``, ``model_version``; from status: ``state``, ``model`` and ``model_version``. Events whose ``event`` is in
ERROR_EVENTS also count as errors when metrics carry no count.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from edge.telemetry.mqtt import Message
from edge.telemetry.topics import ROOT, split_topic

SUBSCRIPTIONS = (f"{ROOT}/+/status", f"{ROOT}/+/metrics", f"{ROOT}/+/events")
ERROR_EVENTS = {"crash", "worker_crash", "escalation", "command_refused", "spool_overflow", "error"}


@dataclass
class DeviceRow:
    device: str
    online: bool | None = None
    model: str | None = None
    version: str | None = None         # the model's version (manifest), from status or metrics
    p95_ms: float | None = None
    throughput: float | None = None
    errors: int = 0
    last_seq: int | None = None
    last_seen: float | None = None


class Fleet:
    def __init__(self, devices: tuple[str, ...] = ()):
        self.only = set(devices)
        self.rows: dict[str, DeviceRow] = {}
        self._event_errors: dict[str, int] = {}
        self.bad_messages = 0

    def on_message(self, message: Message) -> None:
        parts = split_topic(message.topic)
        if parts is None or (self.only and parts[0] not in self.only):
            return
        device, kind, _ = parts
        try:
            record = json.loads(message.payload)
            data = record.get("data") or {}
            if not isinstance(data, dict):
                raise ValueError("data is not an object")
        except (ValueError, AttributeError):
            self.bad_messages += 1
            return
        row = self.rows.setdefault(device, DeviceRow(device))
        ts = record.get("ts") if isinstance(record.get("ts"), (int, float)) else time.time()
        row.last_seen = max(row.last_seen or 0.0, ts)
        if isinstance(record.get("seq"), int):
            row.last_seq = max(row.last_seq or 0, record["seq"])
        if kind == "status":
            row.online = data.get("state") == "online"
            row.model = data.get("model", row.model)
            row.version = _text(data.get("model_version"), row.version)
        elif kind == "metrics":
            self._metrics(row, data)
        elif kind == "events" and data.get("event") in ERROR_EVENTS:
            self._event_errors[device] = self._event_errors.get(device, 0) + 1
            row.errors = max(row.errors, self._event_errors[device])

    @staticmethod
    def _metrics(row: DeviceRow, data: dict) -> None:
        latency = data.get("latency_ms")
        p95 = latency.get("p95") if isinstance(latency, dict) else data.get("latency_p95_ms", data.get("p95_ms"))
        if isinstance(p95, (int, float)):
            row.p95_ms = float(p95)
        if isinstance(data.get("throughput"), (int, float)):
            row.throughput = float(data["throughput"])
        errors = data.get("total_errors", data.get("errors"))
        if isinstance(errors, int) and not isinstance(errors, bool):
            row.errors = max(row.errors, errors)
        if isinstance(data.get("model"), str):
            row.model = data["model"]
        row.version = _text(data.get("model_version"), row.version)
        if row.online is None:
            row.online = True    # it is talking, even if we have not seen a status yet

    def snapshot(self) -> list[dict]:
        return [asdict(self.rows[d]) for d in sorted(self.rows)]


def render_table(rows: list[dict], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("DEVICE", "ONLINE", "MODEL", "P95 MS", "THRPT/S", "ERRORS", "LAST SEQ", "LAST SEEN")
    lines = [header]
    for r in rows:
        model = " ".join(str(v) for v in (r["model"], r.get("version")) if v) or "-"
        lines.append((r["device"], {True: "yes", False: "NO", None: "?"}[r["online"]], model,
                      _num(r["p95_ms"], 2), _num(r["throughput"], 1), str(r["errors"]),
                      "-" if r["last_seq"] is None else str(r["last_seq"]),
                      "-" if r["last_seen"] is None else f"{max(0.0, now - r['last_seen']):.0f}s ago"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    if not rows:
        out.append("(no devices seen yet)")
    return "\n".join(out)


def _text(value, default):
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else default


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
