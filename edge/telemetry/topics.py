"""Topic names and record envelopes: the MQTT contract of DESIGN.md in one place.

    ganglion/v1/<device>/status            retained; {"state": "online"|"offline", ...}; Last Will = offline
    ganglion/v1/<device>/metrics           periodic numbers
    ganglion/v1/<device>/results/<model>   inference results ('.' in the model name becomes '_')
    ganglion/v1/<device>/events            crash, restart, deploy, spool overflow, refused command, ...
    ganglion/v1/<device>/cmd/<verb levels> commands in; replies go to the MQTT 5 response topic

A command verb keeps its dotted name in the API and the CLI (``config.set``, ``deploy.chunk``),
but its topic has one level per dotted part: ``cmd/config/set``. NATS closes the connection on a
topic level holding '.' and RabbitMQ misroutes it (FACTS.md), so ``command_topic`` is the one
place that maps a verb to a topic and ``verb_of`` the one place that maps it back. Devices
subscribe ``cmd/#`` and so still accept the old dotted topics (``cmd/config.set``) from older
tools on brokers that carry them -- for one release (remove after v1 of the topic change).

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
# A verb: dot-separated parts, each a topic level of its own (command_topic); 64 characters at most.
VERB_RE = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")


def device_topic(device: str, kind: str, subtopic: str | None = None) -> str:
    """The topic of a record; ``results`` needs a subtopic (the model), the others take none."""
    if kind not in KINDS:
        raise UsageError(f"unknown telemetry kind {kind!r}", where="record", code="usage.telemetry_kind",
                         hint=f"one of: {', '.join(KINDS)}")
    if kind == "results":
        if not subtopic or not LEVEL_RE.match(subtopic):
            raise UsageError(f"results need a model name as subtopic, got {subtopic!r}", where="record",
                             code="usage.telemetry_subtopic", hint="1-64 characters from A-Z a-z 0-9 . _ -")
        # a '.' would make NATS close the connection (FACTS.md): the level says mobilenet_v2_1 for a
        # model named mobilenet_v2.1 (the payload keeps the name); one rule, like command_topic
        return f"{ROOT}/{device}/results/{subtopic.replace('.', '_')}"
    if subtopic is not None:
        raise UsageError(f"{kind} takes no subtopic", where="record", code="usage.telemetry_subtopic")
    return f"{ROOT}/{device}/{kind}"


def command_topic(device: str, verb: str) -> str:
    """The topic a command ``verb`` goes to: each dotted part is one topic level
    (``config.set`` -> ``ganglion/v1/<device>/cmd/config/set``), safe on every broker."""
    return f"{ROOT}/{device}/cmd/{verb.replace('.', '/')}"


def legacy_command_topic(device: str, verb: str) -> str:
    """The topic older tools used (the dotted verb as one level): devices still accept it,
    and it is what their signatures were made over. Deprecated; never sent by this version."""
    return f"{ROOT}/{device}/cmd/{verb}"


def command_filter(device: str) -> str:
    """What a device subscribes to: every command topic, new (levels) and legacy (dotted)."""
    return f"{ROOT}/{device}/cmd/#"


def verb_of(topic: str) -> str:
    """The verb a command topic carries, in its dotted API form ('' when there is none):
    ``.../cmd/config/set`` and the legacy ``.../cmd/config.set`` both give ``config.set``."""
    _, sep, rest = topic.partition("/cmd/")
    return rest.replace("/", ".") if sep else ""


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
