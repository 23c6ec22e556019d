"""Commands: ``ganglion/v1/<device>/cmd/<verb>`` in (a dotted verb as levels: topics.py), one reply
out through the MQTT 5 response topic
(under MQTT 3.1.1: the ``reply_to`` topic and ``corr`` correlation carried in the command's JSON).

What happens to a command, in order (each step can refuse it with an error reply):

    1. size        larger than ``max_bytes``                        -> command.too_large
    2. schema      a JSON object {"id": str, "args": object, ["ts", "sig", "reply_to", "corr"]}
                                                                    -> command.malformed
    3. verb        a registered verb                                -> command.unknown_verb
    4. signature   when trusted keys are configured (signing.py)   -> command.unauthorized / .stale
    5. id          seen before: the cached reply again, the handler does NOT run (idempotency);
                   same id with other verb/args -> command.id_reused; still running -> command.in_progress
    6. handler     ``handler(args) -> dict`` on a worker thread; GanglionError -> its code
                   (the reply is stored after the handler returns: a device that dies DURING a
                   handler runs it again when the sender retries -- at least once, not exactly once)

Steps 1-4 are refusals: logged as a ``command_refused`` event, never cached (an attacker must not be
able to plant a refusal under a legitimate id). The reply is ``{"id", "verb", "ok", "result" |
"error", "device", "ts"}`` with the request's correlation data; without a response topic it goes to
``ganglion/v1/<device>/replies``. A command without MQTT 5 properties but with ``reply_to`` (and
``corr``) in its JSON is answered on that topic, the correlation echoed as ``"corr"`` in the reply. Handlers run on a small thread pool so a slow one (a deploy) never
blocks paho's network thread; the queue is bounded (``command.busy`` past it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from core.errors import GanglionError
from edge.telemetry.errors import CommandError
from edge.telemetry.mqtt import Message
from edge.telemetry.signing import check_signature
from edge.telemetry.topics import VERB_RE, verb_of

log = logging.getLogger("ganglion.telemetry.commands")
ALLOWED_KEYS = {"id", "args", "ts", "sig", "reply_to", "corr"}
MAX_ID = 128
MAX_REPLY_TOPIC = 256
Handler = Callable[[dict], dict]


class CommandLog:
    """Persistent id -> (digest, reply) table: the memory that makes commands idempotent."""

    def __init__(self, path: str | Path, *, keep: int = 10_000):
        self.keep = keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                         "reply TEXT NOT NULL, at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS commands_at ON commands(at)")

    def get(self, command_id: str) -> tuple[str, dict] | None:
        with self._lock:
            row = self._db.execute("SELECT digest, reply FROM commands WHERE id=?", (command_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put(self, command_id: str, digest: str, reply: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO commands(id, digest, reply, at) VALUES (?,?,?,?)",
                             (command_id, digest, json.dumps(reply), time.time()))
            # keep the newest `keep` ids; that bound must exceed the commands a signed window can hold
            self._db.execute("DELETE FROM commands WHERE id IN (SELECT id FROM commands ORDER BY at DESC "
                             "LIMIT -1 OFFSET ?)", (self.keep,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def parse_command(payload: bytes, max_bytes: int, where: str) -> dict:
    """Bytes -> a checked command dict, or CommandError (too_large / malformed)."""
    if len(payload) > max_bytes:
        raise CommandError(f"command of {len(payload)} bytes exceeds the {max_bytes}-byte limit", where=where,
                           code="command.too_large", hint="send large data with a chunked transfer")
    try:
        command = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"command is not UTF-8 JSON: {exc}", where=where, code="command.malformed") from None
    if not isinstance(command, dict):
        raise CommandError("command must be a JSON object", where=where, code="command.malformed")
    problems = []
    extra = sorted(set(command) - ALLOWED_KEYS)
    if extra:
        problems.append(f"unknown field(s) {extra}")
    cid = command.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_ID or not cid.isprintable():
        problems.append(f"'id' must be a printable string of 1-{MAX_ID} characters")
    if not isinstance(command.get("args"), dict):
        problems.append("'args' must be a JSON object")
    if "sig" in command and not isinstance(command["sig"], str):
        problems.append("'sig' must be a hex string")
    problems += _route_problems(command)
    if problems:
        raise CommandError("malformed command: " + "; ".join(problems), where=where, code="command.malformed",
                           hint='send {"id": "<unique>", "args": {...}}')
    return command


def _route_problems(command: dict) -> list[str]:
    """The MQTT 3.1.1 reply route: a plain topic (no wildcards) and a printable correlation."""
    problems = []
    topic = command.get("reply_to")
    if "reply_to" in command and not (isinstance(topic, str) and 0 < len(topic) <= MAX_REPLY_TOPIC
                                      and topic.isprintable() and not set(topic) & set("+#")):
        problems.append(f"'reply_to' must be a topic of 1-{MAX_REPLY_TOPIC} printable characters without + or #")
    corr = command.get("corr")
    if "corr" in command and not (isinstance(corr, str) and 0 < len(corr) <= MAX_ID and corr.isprintable()):
        problems.append(f"'corr' must be a printable string of 1-{MAX_ID} characters")
    return problems


def envelope_route(message: Message, command: dict) -> Message:
    """A command that came without MQTT 5 properties but names its reply route in its JSON
    (MQTT 3.1.1): the message as if the properties had been there."""
    if message.response_topic is not None or "reply_to" not in command:
        return message
    corr = command.get("corr")
    return dataclasses.replace(message, response_topic=command["reply_to"], in_envelope=True,
                               correlation=corr.encode() if corr is not None else None)


class CommandRouter:
    """Checks, deduplicates and dispatches commands; replies through ``reply(topic, payload, corr)``."""

    def __init__(self, device_id: str, *, reply: Callable[[str, bytes, bytes | None], None],
                 event: Callable[[dict], None], log_db: CommandLog, trusted_keys: list | None = None,
                 window_s: float = 300.0, max_bytes: int = 256 * 1024, workers: int = 2, queue: int = 32):
        self.device_id = device_id
        self._reply, self._event, self._log = reply, event, log_db
        self.trusted_keys = list(trusted_keys or [])
        self.window_s, self.max_bytes = window_s, max_bytes
        self._handlers: dict[str, Handler] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(queue)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ganglion-cmd")
        self.counters = {"handled": 0, "refused": 0, "replayed": 0, "failed": 0}

    def register(self, verb: str, handler: Handler) -> None:
        if not VERB_RE.match(verb):
            raise CommandError(f"invalid verb {verb!r}", code="command.bad_verb",
                               hint="1-64 characters from a-z A-Z 0-9 . _ -; '.' only between parts "
                                    "(each part becomes one topic level)")
        self._handlers[verb] = handler

    @property
    def verbs(self) -> list[str]:
        return sorted(self._handlers)

    def on_message(self, message: Message) -> None:
        """MQTT callback (network thread): queue the command; never raises."""
        if not self._slots.acquire(blocking=False):
            self._respond(message, None, None, CommandError("too many commands pending", code="command.busy",
                                                            hint="retry with the same id later"))
            return
        try:
            self._pool.submit(self._run, message)
        except RuntimeError:        # the pool is shut down: the device is stopping
            self._slots.release()

    def _run(self, message: Message) -> None:
        try:
            self.handle(message)
        except Exception:      # the last line of defence: a command must never take the device down
            log.exception("command handling failed on %s", message.topic)
        finally:
            self._slots.release()

    def handle(self, message: Message) -> dict:
        """Process one command synchronously and return the reply that was sent."""
        verb = verb_of(message.topic)      # cmd/config/set and the legacy cmd/config.set alike
        command = None
        try:
            command = parse_command(message.payload, self.max_bytes, message.topic)
            message = envelope_route(message, command)
            if verb not in self._handlers:
                raise CommandError(f"unknown verb {verb!r}", where=message.topic, code="command.unknown_verb",
                                   hint=f"this device knows: {', '.join(self.verbs)}")
            if self.trusted_keys:
                check_signature(self.trusted_keys, message.topic, command, self.window_s)
        except CommandError as exc:
            self.counters["refused"] += 1
            cid = command.get("id") if isinstance(command, dict) else None
            self._event({"event": "command_refused", "verb": verb[:64], "id": cid if isinstance(cid, str) else None,
                         "code": exc.code, "message": exc.message})
            return self._respond(message, verb, cid, exc)
        return self._dispatch(message, verb, command)

    def _dispatch(self, message: Message, verb: str, command: dict) -> dict:
        cid = command["id"]
        digest = hashlib.sha256(json.dumps([verb, command["args"]], sort_keys=True).encode()).hexdigest()
        with self._lock:
            seen = self._log.get(cid)
            busy = cid in self._running
            if seen is None and not busy:
                self._running.add(cid)
        if seen is not None:
            if seen[0] != digest:
                return self._respond(message, verb, cid, CommandError(
                    f"command id {cid!r} was already used for another command", code="command.id_reused",
                    hint="use a fresh id for every new command"))
            self.counters["replayed"] += 1
            return self._send(message, seen[1])
        if busy:
            return self._respond(message, verb, cid, CommandError(
                f"command {cid!r} is still running", code="command.in_progress", hint="wait for its reply"))
        try:
            reply = self._execute(verb, cid, command["args"], digest)
        finally:
            with self._lock:
                self._running.discard(cid)
        return self._send(message, reply)

    def _execute(self, verb: str, cid: str, args: dict, digest: str) -> dict:
        try:
            result = self._handlers[verb](args)
            if not isinstance(result, dict):
                raise CommandError(f"handler for {verb!r} returned {type(result).__name__}, not a dict",
                                   code="command.bad_result")
            json.dumps(result, allow_nan=False)
        except GanglionError as exc:
            self.counters["failed"] += 1
            reply = self._reply_body(verb, cid, error=exc)
        except Exception as exc:   # a handler bug: reply, log, do not cache (it may be transient)
            log.exception("command %s (%s) crashed", verb, cid)
            self.counters["failed"] += 1
            return self._reply_body(verb, cid, error=CommandError(f"{type(exc).__name__}: {exc}",
                                                                  code="command.internal"))
        else:
            self.counters["handled"] += 1
            reply = self._reply_body(verb, cid, result=result)
        self._log.put(cid, digest, reply)
        return reply

    def _reply_body(self, verb, cid, *, result=None, error: GanglionError | None = None) -> dict:
        body = {"id": cid, "verb": verb, "ok": error is None, "device": self.device_id, "ts": round(time.time(), 3)}
        if error is None:
            body["result"] = result
        else:
            body["error"] = error.to_dict()
        return body

    def _respond(self, message: Message, verb, cid, error: GanglionError) -> dict:
        return self._send(message, self._reply_body(verb, cid, error=error))

    def _send(self, message: Message, body: dict) -> dict:
        if message.in_envelope and message.correlation is not None:
            # not stored with the cached reply: a retry from another requester has its own corr
            body = {**body, "corr": message.correlation.decode()}
        self._reply(message.response_topic, json.dumps(body, sort_keys=True).encode(), message.correlation)
        return body

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
