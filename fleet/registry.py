"""The device registry: what the hub knows about every device, kept from the records devices publish.

Inputs are the daemon's records (docs/telemetry.md): the retained ``status`` document (online /
offline via the Last Will, model, model_version, model_sha256, board, tags, restarts), periodic
``metrics`` (latency_p50_ms / latency_p95_ms, throughput, results and errors of the window,
total_restarts, cpu_percent, rss_mb, temperature_c) and ``events`` (the last ``firmware`` event's
phase -- installed, validated, reverted, refused -- is kept as the row's ``firmware``: what a
firmware rollout is judged by). ``ingest`` turns one record
into the device row and returns the changes worth streaming (online/offline, a new model, an
event); the row is marked dirty and written to the store in batches by ``flush``. The broker
re-sends retained status after a hub restart, so a lost batch costs nothing.

Times are the hub's clock at receipt (``last_seen``, ``metrics_at``): rollouts compare them with
the hub's own send times, so a device with a wrong clock cannot confuse a verdict. Metrics and
events are delivered at least once: a record whose ``seq`` is not above the last one seen from
the device's current run (its status ``since``) is a duplicate and is dropped.
"""
from __future__ import annotations

import json
from collections import deque

from edge.telemetry.config import check_device_id
from edge.telemetry.topics import split_topic
from core.errors import UsageError
from fleet.store import Store

HEALTH_KEYS = {"latency_p50_ms": "p50_ms", "latency_p95_ms": "p95_ms", "throughput": "throughput",
               "results": "results", "errors": "errors", "total_restarts": "restarts",
               "total_errors": "total_errors", "temperature_c": "temperature_c", "cpu_percent": "cpu_percent",
               "rss_mb": "rss_mb"}
STATUS_KEYS = ("board", "model", "model_version", "model_sha256", "firmware_version")
RECENT_EVENTS = 20
FIRMWARE_PHASES = ("installed", "validated", "reverted", "refused")


class Registry:
    def __init__(self, store: Store):
        self.store = store
        self.devices: dict[str, dict] = {}
        self.events: dict[str, deque] = {}
        self._dirty: set[str] = set()
        self._seq: dict[str, int] = {}         # the last stream seq per device, to drop duplicates
        self._since: dict[str, object] = {}    # the status 'since' of the device's current run
        for row in store.query("SELECT * FROM devices"):
            row["online"] = bool(row["online"])
            self.devices[row["id"]] = row

    def device(self, device_id: str) -> dict:
        row = self.devices.get(device_id)
        if row is None:
            row = self.devices[device_id] = {"id": device_id, "online": False, "tags": {}, "health": {},
                                             "status": {}, "last_seen": None, "metrics_at": None,
                                             "firmware": None,
                                             **{k: None for k in STATUS_KEYS}}
        return row

    def ingest(self, topic: str, payload: bytes, now: float) -> list[tuple[str, str, dict]]:
        """One record -> the registry; returns change-stream entries ``(kind, device, data)``."""
        parts = split_topic(topic)
        if parts is None or parts[1] not in ("status", "metrics", "events"):
            return []
        device_id, kind, _ = parts
        try:
            check_device_id(device_id)
            record = json.loads(payload)
            data = record["data"]
        except (UsageError, ValueError, TypeError, KeyError):
            return []           # not a device (the hub's own topic) or not a record: ignore
        if not isinstance(data, dict):
            return []
        row = self.device(device_id)
        row["last_seen"] = now
        self._dirty.add(device_id)
        if kind == "status":
            if data.get("since") != self._since.get(device_id):     # a new run: its seq is its own
                self._since[device_id] = data.get("since")
                self._seq.pop(device_id, None)
            return self._status(row, data, now)
        seq = record.get("seq")
        if isinstance(seq, int) and seq <= self._seq.get(device_id, -1):
            return []           # delivery is at least once: a record seen already (docs/telemetry.md)
        if isinstance(seq, int):
            self._seq[device_id] = seq
        if kind == "metrics":
            return self._metrics(row, data, now)
        return self._event(row, data, now)

    def _status(self, row: dict, data: dict, now: float) -> list:
        changes = []
        online = data.get("state") == "online"
        if online != row["online"]:
            changes.append(("device", row["id"], {"online": online, "reason": data.get("reason")}))
        row["online"] = online
        if not online:
            return changes
        old = row.get("model_sha256"), row.get("model_version")
        for key in STATUS_KEYS:
            if key in data:
                row[key] = data[key]
        if isinstance(data.get("tags"), dict):
            row["tags"] = {str(k): str(v) for k, v in data["tags"].items()}
        if "restarts" in data:
            row["health"] = {**row["health"], "restarts": data["restarts"]}
        row["status"] = {k: v for k, v in data.items() if k not in ("inputs", "worker_pids")}
        if (row.get("model_sha256"), row.get("model_version")) != old:
            changes.append(("device", row["id"], {"model_version": row["model_version"],
                                                  "model_sha256": row["model_sha256"]}))
        return changes

    def _metrics(self, row: dict, data: dict, now: float) -> list:
        health = {new: data[old] for old, new in HEALTH_KEYS.items() if old in data}
        total = (health.get("results") or 0) + (health.get("errors") or 0)
        health["error_rate"] = round((health.get("errors") or 0) / total, 4) if total else 0.0
        health["model_version"] = data.get("model_version")
        row["health"] = {**row["health"], **health}
        row["metrics_at"] = now
        if not row["online"]:          # a metrics record proves the device is up (status may lag)
            row["online"] = True
            return [("device", row["id"], {"online": True, "reason": "metrics"})]
        return []

    def _event(self, row: dict, data: dict, now: float) -> list:
        self.events.setdefault(row["id"], deque(maxlen=RECENT_EVENTS)).append(data)
        if data.get("event") == "firmware" and data.get("phase") in FIRMWARE_PHASES:
            # the daemon's slot verdicts (firmware/daemon_hook.py): what a firmware rollout waits for
            row["firmware"] = {"phase": data["phase"], "version": data.get("version"), "at": now,
                               "reason": data.get("reason") or (data.get("error") or {}).get("message")}
            if data["phase"] == "validated":
                row["firmware_version"] = data.get("version")
        return [("event", row["id"], {k: data[k] for k in list(data)[:8]})]

    def flush(self) -> int:
        """Write the devices changed since the last flush; returns how many."""
        dirty, self._dirty = self._dirty, set()
        self.store.upsert_devices([self.devices[d] for d in dirty])
        return len(dirty)

    def select(self, target: str | list[str]) -> list[str]:
        """The devices a ``--to`` names: ``all``, ``tag:K=V`` or a list of ids (known or not)."""
        if isinstance(target, list):
            return sorted(set(target))
        if target == "all":
            return sorted(self.devices)
        key, _, value = target[4:].partition("=")
        return sorted(d for d, row in self.devices.items() if row["tags"].get(key) == value)
