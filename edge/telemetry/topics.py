"""Topic names and record envelopes: the MQTT contract of DESIGN.md in one place.

    ganglion/v1/<device>/status            retained; {"state": "online"|"offline", ...}; Last Will = offline
    ganglion/v1/<device>/metrics           periodic numbers
    ganglion/v1/<device>/results/<model>   inference results
    ganglion/v1/<device>/events            crash, restart, deploy, spool overflow, refused command, ...
    ganglion/v1/<device>/cmd/<verb>        commands in; replies go to the MQTT 5 response topic

Every payload is one JSON object ``{"seq", "ts", "device", "kind", "data"}``. ``seq`` is the
device-local sequence number shared by metrics, results and events (status has none: it is a
retained last value, not a stream), so a consumer can prove that nothing was lost.
"""
from __future__ import annotations

import json
import re

from core.errors import UsageError

ROOT = "ganglion/v1"
STREAM_KINDS = ("metrics", "results", "events")
KINDS = ("status",) + STREAM_KINDS
# A subtopic (the model name of /results/<model>) and a command verb are single topic levels.
LEVEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def device_topic(device: str, kind: str, subtopic: str | None = None) -> str:
    """The topic of a record; ``results`` needs a subtopic (the model), the others take none."""
    if kind not in KINDS:
        raise UsageError(f"unknown telemetry kind {kind!r}", where="record", code="usage.telemetry_kind",
                         hint=f"one of: {', '.join(KINDS)}")
    if kind == "results":
        if not subtopic or not LEVEL_RE.match(subtopic):
            raise UsageError(f"results need a model name as subtopic, got {subtopic!r}", where="record",
                             code="usage.telemetry_subtopic", hint="1-64 characters from A-Z a-z 0-9 . _ -")
        return f"{ROOT}/{device}/results/{subtopic}"
    if subtopic is not None:
        raise UsageError(f"{kind} takes no subtopic", where="record", code="usage.telemetry_subtopic")
    return f"{ROOT}/{device}/{kind}"


def command_topic(device: str, verb: str) -> str:
    return f"{ROOT}/{device}/cmd/{verb}"


def default_reply_topic(device: str) -> str:
    """Where replies go when a command carries no MQTT 5 response topic."""
    return f"{ROOT}/{device}/replies"


def split_topic(topic: str) -> tuple[str, str, str | None] | None:
    """``ganglion/v1/<device>/<kind>[/<sub>]`` -> (device, kind, sub); None for other topics."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    return parts[2], parts[3], "/".join(parts[4:]) or None


def envelope(seq: int | None, ts: float, device: str, kind: str, data) -> bytes:
    """The JSON bytes of one record. Compact and key-sorted so equal records are equal bytes."""
    try:
        return json.dumps({"seq": seq, "ts": round(ts, 6), "device": device, "kind": kind, "data": data},
                          sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"telemetry payload is not JSON-serialisable: {exc}", where=kind,
                         code="usage.telemetry_payload",
                         hint="send plain dicts/lists of str, int, float (finite), bool, None") from None
