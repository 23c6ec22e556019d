"""The other end of commands: send one to a device and wait for its reply (CLI, tests, fleet tools).

    with Requester("mqtt://127.0.0.1:1883") as req:
        reply = req.call("cam1", "ping")                       # {"ok": true, "result": {...}, ...}
        reply = req.call("cam1", "reload", {"model": "m.gpk"}, key=private_key)
        reply = req.send_file("cam1", "deploy", "model.gpk")   # begin / missing chunks / commit

Each requester listens on its own reply topic ``ganglion/v1/_requesters/<client id>/reply`` and
matches replies by MQTT 5 correlation data, so many requesters can talk to one device at once.
When the connection speaks MQTT 3.1.1 (``mqtt_version``; auto falls back on brokers without
MQTT 5) the reply topic and correlation ride in the command's JSON (``reply_to``, ``corr``: signed
with the rest) and the device echoes ``corr`` in its reply.
``call`` retries with the SAME command id on timeout: the device's idempotency table makes that safe.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from edge.telemetry.config import BrokerUrl, parse_broker_url
from edge.telemetry.errors import BrokerError, CommandError, TelemetryError, TransferError
from edge.telemetry.mqtt import Message, MqttClient
from edge.telemetry.signing import sign_command
from edge.telemetry.topics import ROOT, command_topic


class Requester:
    def __init__(self, broker: str | BrokerUrl | list, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, username: str | None = None, password: str | None = None,
                 connect_timeout: float = 10.0, mqtt_version: str = "auto", key=None):
        # one broker, or a failover list in order of preference (failover.py)
        urls = [b if isinstance(b, BrokerUrl) else parse_broker_url(b)
                for b in (broker if isinstance(broker, (list, tuple)) else [broker])]
        self.connect_timeout = connect_timeout
        self.key = key          # signs every call and transfer that names no key of its own
        self.client_id = f"ganglion-req-{uuid.uuid4().hex[:12]}"
        self.reply_topic = f"{ROOT}/_requesters/{self.client_id}/reply"
        self._waiting: dict[bytes, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()
        self.client = MqttClient(urls, client_id=self.client_id, username=username, password=password,
                                 ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                                 mqtt_version=mqtt_version)
        self.client.subscribe(self.reply_topic, self._on_reply)

    def __enter__(self) -> "Requester":
        self.client.connect(self.connect_timeout)
        # a reply to a subscription the broker refused would be lost (NATS refuses for a while
        # after a cluster node died): ready means the reply topic is granted
        if not self.client.wait_granted(self.reply_topic, self.connect_timeout):
            self.client.stop()
            raise BrokerError(f"the broker did not grant the reply subscription within {self.connect_timeout:g}s",
                              where=self.reply_topic, hint="a broker cluster recovering from a node loss "
                              "refuses subscriptions for a while: try again, or raise --timeout")
        return self

    def __exit__(self, *exc) -> None:
        self.client.stop()

    @property
    def in_envelope(self) -> bool:
        """True when replies are routed by the command's JSON (an MQTT 3.1.1 connection)."""
        return self.client.protocol != "5"

    def _on_reply(self, message: Message) -> None:
        corr = message.correlation or _json_corr(message.payload)
        with self._lock:
            slot = self._waiting.get(corr or b"")
        if slot is not None:
            slot[1].append(message.payload)
            slot[0].set()

    def call_raw(self, device: str, verb: str, payload: bytes, *, timeout: float = 10.0,
                 corr: bytes | None = None, topic: str | None = None) -> dict:
        """Publish exact bytes as a command and return the parsed reply (used to test bad input).
        ``corr``: the correlation the payload already names (``"corr"``, MQTT 3.1.1); ``topic``:
        publish there instead of ``command_topic(device, verb)`` (e.g. a legacy dotted topic)."""
        corr = corr or uuid.uuid4().bytes
        topic = topic or command_topic(device, verb)
        done, box = threading.Event(), []
        with self._lock:
            self._waiting[corr] = (done, box)
        deadline = time.monotonic() + timeout
        try:
            self.client.publish_wait(topic, payload, response_topic=self.reply_topic, correlation=corr,
                                     timeout=timeout)
            while done.wait(max(deadline - time.monotonic(), 0)):
                reply = json.loads(box.pop(0))
                if (reply.get("error") or {}).get("code") != "command.in_progress":
                    return reply
                with self._lock:      # a retry met the first try still running: its reply is coming
                    if not box:
                        done.clear()
            raise TelemetryError(f"no reply from {device} to {verb!r} within {timeout:g}s",
                                 where=topic, code="telemetry.timeout",
                                 hint="is the device online? (ganglion telemetry watch)")
        finally:
            with self._lock:
                self._waiting.pop(corr, None)

    def call(self, device: str, verb: str, args: dict | None = None, *, key=None, command_id: str | None = None,
             timeout: float = 10.0, retries: int = 1) -> dict:
        """Send ``verb`` with ``args`` (signed when ``key`` is given); return the reply dict.

        ``timeout`` bounds the whole call, shared evenly by ``retries`` tries with the same id and
        correlation (the device runs it once and replays its reply; a retry that meets the first
        try still running waits for that one's reply)."""
        command = {"id": command_id or uuid.uuid4().hex, "args": args or {}}
        corr = uuid.uuid4()              # one for every try: the reply to the first may come late
        if self.in_envelope:             # no MQTT 5 properties: the route goes in the (signed) JSON
            command.update(reply_to=self.reply_topic, corr=corr.hex)
        corr = corr.hex.encode() if self.in_envelope else corr.bytes
        key = key if key is not None else self.key
        if key is not None:
            command = sign_command(key, command_topic(device, verb), command)
        payload = json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        deadline = time.monotonic() + timeout
        for attempt in range(retries):                  # each try gets its share of what is left
            left = deadline - time.monotonic()
            try:
                return self.call_raw(device, verb, payload, timeout=max(left / (retries + 1 - attempt), 0.05),
                                     corr=corr)
            except TelemetryError:
                if deadline - time.monotonic() < 0.05:
                    raise
        return self.call_raw(device, verb, payload, timeout=max(deadline - time.monotonic(), 0.05),
                             corr=corr)

    def send_file(self, device: str, verb: str, path: str | Path, *, args: dict | None = None, key=None,
                  chunk_size: int = 64 * 1024, meta: dict | None = None, timeout: float = 30.0,
                  progress: Callable[[int, int], None] | None = None) -> dict:
        """Chunked transfer (transfer.py): resumes from what the device already has; returns the
        commit reply. The file is read one chunk at a time (hashed in a first pass, then each
        missing chunk read where it lies), so a firmware bundle never sits in memory whole.
        Raises CommandError when a step is refused, TransferError when the file cannot be read."""
        path = Path(path)
        with _readable(path) as fh:
            size, digest = _read(path, lambda: file_digest(fh, chunk_size))
            begin = self._ok(self.call(device, f"{verb}.begin", {
                "sha256": digest, "size": size, "chunk_size": chunk_size, "name": path.name,
                "meta": meta or {}}, key=key, timeout=timeout))
            have = set(begin["have"])
            for index in range(begin["chunks"]):
                if index not in have:
                    piece = _read(path, lambda: _piece(fh, index, chunk_size))
                    # broker and reply errors (a TimeoutError is an OSError too) pass through as
                    # they are: only reading the file is a transfer.file error
                    self._ok(self.call(device, f"{verb}.chunk", {
                        "transfer": digest, "index": index, "data": base64.b64encode(piece).decode(),
                        "sha256": hashlib.sha256(piece).hexdigest()}, key=key, timeout=timeout))
                if progress:
                    progress(index + 1, begin["chunks"])
        return self.call(device, f"{verb}.commit", {"transfer": digest, **(args or {})}, key=key, timeout=timeout)

    @staticmethod
    def _ok(reply: dict) -> dict:
        check_reply(reply)
        return reply["result"]


def _readable(path: Path) -> BinaryIO:
    return _read(path, lambda: path.open("rb"))


def _piece(fh: BinaryIO, index: int, size: int) -> bytes:
    fh.seek(index * size)
    return fh.read(size)


def _read(path: Path, step):
    """``step()``, with an OSError from reading ``path`` as TransferError ``transfer.file``."""
    try:
        return step()
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}", where=str(path),
                            code="transfer.file", hint="check the path and its permissions") from None


def file_digest(fh: BinaryIO, block: int) -> tuple[int, str]:
    """(size, sha256 hex) of an open file, read ``block`` bytes at a time."""
    sha, size = hashlib.sha256(), 0
    while piece := fh.read(block):
        sha.update(piece)
        size += len(piece)
    return size, sha.hexdigest()


def _json_corr(payload: bytes) -> bytes | None:
    """The ``corr`` a device echoed in its JSON reply (MQTT 3.1.1), or None."""
    try:
        corr = json.loads(payload).get("corr")
    except (ValueError, AttributeError):
        return None
    return corr.encode() if isinstance(corr, str) else None


def check_reply(reply: dict, default: str = "command failed") -> None:
    """Raise a refused or failed command's reply as the ``CommandError`` the device sent."""
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise CommandError(err.get("message", default), where=err.get("where"),
                           hint=err.get("hint"), code=err.get("code") or "command.failed")
