"""Command signatures: what exactly is signed, and the check a device makes before obeying.

A signed command is the JSON object ``{"id", "args", "ts", "sig"}`` published on
``ganglion/v1/<device>/cmd/<verb>``. ``sig`` is a hex ed25519 signature (core.keys) over

    b"ganglion-cmd/1\\n" + topic + b"\\n" + canonical_json({"id": id, "args": args, "ts": ts})

where canonical JSON is key-sorted, without whitespace, UTF-8 (Python's ``json.dumps(...,
sort_keys=True, separators=(",", ":"), ensure_ascii=False)``). Binding the topic means a signature
for ``ping`` on device A cannot be replayed as ``deploy`` or on device B; ``ts`` (integer Unix
seconds) must be within ``window_s`` of the device clock, and the command id is remembered
(``commands.CommandLog``), so a captured command cannot be replayed later either.

Under MQTT 3.1.1 (no properties) a command carries its reply route in the JSON: ``reply_to`` and
``corr``. When present they are signed too -- added to the canonical object beside id, args and
ts -- so nobody can redirect a signed command's reply; absent, the signed bytes are exactly the
MQTT 5 ones.

The tools sign every command whenever a command key exists (``find_command_key``): the
``--signing-key`` given, else ``$GANGLION_COMMAND_KEY``, else ``$XDG_CONFIG_HOME/ganglion/command.key``
(``~/.config/ganglion/command.key``) when that file is there. A device without ``command_keys``
obeys unsigned commands and says so loudly at start (service.py).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from core import keys
from core.errors import SignatureError
from edge.telemetry.errors import CommandError

DOMAIN = b"ganglion-cmd/1\n"


ROUTE_KEYS = ("reply_to", "corr")       # the MQTT 3.1.1 reply route, signed when present


KEY_ENV = "GANGLION_COMMAND_KEY"


def default_key_path() -> Path:
    """Where an operator's command key lives when no flag or variable names one."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ganglion" / "command.key"


def find_command_key(explicit: str | os.PathLike | None = None) -> Path | None:
    """The command key the tools sign with: ``explicit``, else ``$GANGLION_COMMAND_KEY``, else the
    default file if it exists; None when there is none (commands then go unsigned)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    path = default_key_path()
    return path if path.is_file() else None


def canonical(topic: str, command_id: str, args: dict, ts: int, route: dict | None = None) -> bytes:
    fields = {"id": command_id, "args": args, "ts": ts, **(route or {})}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return DOMAIN + topic.encode() + b"\n" + body.encode()


def sign_command(private_key, topic: str, command: dict, *, now: float | None = None) -> dict:
    """Return ``command`` with ``ts`` (now) and ``sig`` added; ``private_key`` from core.keys."""

    ts = int(time.time() if now is None else now)
    signed = dict(command, ts=ts)
    signed["sig"] = keys.sign(private_key, canonical(topic, command["id"], command["args"], ts, _route(command)))
    return signed


def check_signature(trusted_keys: list, topic: str, command: dict, window_s: float,
                    *, now: float | None = None) -> None:
    """Raise CommandError (command.unauthorized / command.stale) unless a trusted key signed it
    recently. The caller has already checked the schema (id: str, args: dict)."""

    ts = command.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise CommandError("a signed command needs an integer 'ts' (Unix seconds)", where=topic,
                           code="command.unauthorized", hint="sign it: ganglion telemetry send --key KEY")
    try:
        keys.verify(trusted_keys, canonical(topic, command["id"], command["args"], ts, _route(command)),
                    command.get("sig"), where=topic)
    except SignatureError as exc:
        raise CommandError(f"command refused: {exc.message}", where=topic, code="command.unauthorized",
                           hint="sign commands with a key whose .pub is in telemetry.command_keys") from None
    except (TypeError, ValueError) as exc:
        raise CommandError(f"command refused: {exc}", where=topic, code="command.unauthorized") from None
    now = time.time() if now is None else now
    if abs(now - ts) > window_s:
        raise CommandError(f"command timestamp is {now - ts:+.0f}s from the device clock "
                           f"(allowed: +-{window_s:g}s)", where=topic, code="command.stale",
                           hint="re-send it freshly signed; check the clocks (NTP) if this repeats")


def _route(command: dict) -> dict:
    return {k: command[k] for k in ROUTE_KEYS if k in command}
