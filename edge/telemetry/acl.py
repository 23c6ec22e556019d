"""Broker access control for a fleet: a mosquitto password file and ACL where each device may
publish only under its own id and read only its own commands and inputs.

    ganglion telemetry acl --device cam1 --device cam2 --out /etc/mosquitto/ganglion

writes into ``--out``:

    passwd            mosquitto password file (PBKDF2-SHA512, mosquitto 2's ``$7$`` format)
    acl               mosquitto ACL file (below)
    mosquitto.conf    the three lines that switch them on (include it from the broker's config)
    credentials.json  the plain passwords, mode 0600: hand each device its own, then move it away
    nats-auth.conf    the same rules as a NATS ``authorization`` block (plain passwords, mode 0600):
                      ``include nats-auth.conf`` in every node's config

Accounts (the user name of a device is its device id; the input connection ``ganglion-<id>-in``
logs in with the same account):

    device <id>   write  ganglion/v1/<id>/#                  its status (and Last Will), records, replies
                  write  ganglion/v1/_requesters/+/reply     replies to the tools (MQTT 3.1.1 reply_to)
                  read   ganglion/v1/<id>/cmd/#              its own commands only
                  read   ganglion/v1/<id>/in, .../in/#       its own MQTT inputs
    operator      readwrite ganglion/v1/#                    the tools: telemetry send/watch, send-file
    hub           readwrite ganglion/v1/#                    the fleet hub

Re-running with more devices keeps the passwords already in ``credentials.json`` (a device is
added, nobody is re-keyed); ``--rotate`` makes new ones for everybody. The same rules for NATS
accounts are in docs/cluster.md. Password hashing follows mosquitto 2.0's ``mosquitto_passwd``:
``user:$7$<iterations>$<base64 salt, 12 bytes>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>``
(mosquitto ``src/password_mosq.c``); the ACL syntax is mosquitto.conf(5) ``acl_file``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.artifact import atomic_write
from core.errors import UsageError
from edge.telemetry.config import check_device_id
from edge.telemetry.topics import ROOT

PBKDF2_ITERATIONS = 101         # mosquitto_passwd's default in 2.0
SALT_BYTES = 12
# the broker's user must read passwd (chgrp it to that user's group); nobody else needs to
MODES = {"passwd": 0o640, "acl": 0o644, "mosquitto.conf": 0o644}


@dataclass(frozen=True)
class Accounts:
    devices: dict[str, str]         # device id -> password
    operator: tuple[str, str]       # (user, password)
    hub: tuple[str, str] | None

    def users(self) -> dict[str, str]:
        users = dict(self.devices)
        for account in (self.operator, self.hub):
            if account is not None:
                users[account[0]] = account[1]
        return users


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """One password as mosquitto 2 stores it (``$7$``: PBKDF2-HMAC-SHA512)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def accounts(devices: list[str], *, operator: str = "ganglion-operator", hub: str | None = "ganglion-hub",
             known: dict[str, str] | None = None) -> Accounts:
    """Check every name (all problems in one UsageError) and give each account a password: the
    one in ``known`` (an earlier credentials.json) or a fresh random one."""
    problems, seen = [], set()
    names = [(d, f"--device {d}") for d in devices] + [(operator, "--operator")] + ([(hub, "--hub")] if hub else [])
    for name, where in names:
        try:
            check_device_id(name, where)
        except UsageError as exc:
            problems.append(exc.message)
        if name in seen:
            problems.append(f"{name!r} is named twice (devices, operator and hub need distinct accounts)")
        seen.add(name)
    if not devices:
        problems.append("no device given")
    if problems:
        raise UsageError("; ".join(problems), where="telemetry acl", code="usage.acl",
                         hint="device ids and account names: 1-64 of A-Z a-z 0-9 _ -, all distinct")
    known = known or {}

    def password(name: str) -> str:
        return known.get(name) or secrets.token_urlsafe(24)
    return Accounts(devices={d: password(d) for d in devices}, operator=(operator, password(operator)),
                    hub=(hub, password(hub)) if hub else None)


def password_file(acc: Accounts) -> str:
    return "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in sorted(acc.users().items()))


def acl_file(acc: Accounts) -> str:
    """mosquitto ACL: per-account ``topic`` lines for the tools, ``pattern`` lines (``%u``: the
    user name, i.e. the device id) for devices. mosquitto denies whatever no line allows."""
    lines = ["# written by `ganglion telemetry acl`: each device publishes only under its own id and",
             "# reads only its own commands and inputs; the operator and hub accounts see the fleet.", ""]
    for account in (acc.operator, acc.hub):
        if account is not None:
            lines += [f"user {account[0]}", f"topic readwrite {ROOT}/#", ""]
    lines += ["# devices (user name = device id); applies to every account",
              f"pattern write {ROOT}/%u/#",
              f"pattern write {ROOT}/_requesters/+/reply",
              f"pattern read {ROOT}/%u/cmd/#",
              f"pattern read {ROOT}/%u/in",
              f"pattern read {ROOT}/%u/in/#", ""]
    return "\n".join(lines)


def nats_authorization(acc: Accounts) -> str:
    """The ACL as NATS permissions on subjects (MQTT '/' is '.', '#' is '>' plus the parent
    subject itself, which a NATS MQTT '#' subscription also takes). ``$MQTT.sub.>``: the
    delivery subjects of the JetStream consumers behind QoS 1 subscriptions (checked on a real
    nats-server 2.9.10: without it every QoS 1 SUBSCRIBE is refused)."""
    root = ROOT.replace("/", ".")

    def user(name: str, password: str, publish: list[str], subscribe: list[str]) -> str:
        quote = lambda items: ", ".join(json.dumps(i) for i in items)       # noqa: E731
        return (f"    {{user: {json.dumps(name)}, password: {json.dumps(password)}, permissions: {{"
                f"publish: [{quote(publish)}], subscribe: [{quote(['$MQTT.sub.>'] + subscribe)}]}}}}")
    users = [user(d, pw, [f"{root}.{d}.>", f"{root}._requesters.*.reply"],
                  [f"{root}.{d}.cmd", f"{root}.{d}.cmd.>", f"{root}.{d}.in", f"{root}.{d}.in.>"])
             for d, pw in sorted(acc.devices.items())]
    users += [user(name, pw, [f"{root}.>"], [root, f"{root}.>"])
              for name, pw in [a for a in (acc.operator, acc.hub) if a]]
    return ("# written by `ganglion telemetry acl` (the rules of its mosquitto acl, as NATS subjects)\n"
            "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n")


def write(out: str | Path, acc: Accounts, *, listener: str | None = None) -> list[Path]:
    """The five files into ``out``, each written atomically (the two with plain passwords 0600)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc}", where=str(out), code="usage.acl") from None
    conf = [f"password_file {out.resolve() / 'passwd'}", f"acl_file {out.resolve() / 'acl'}",
            "allow_anonymous false"]
    if listener:
        conf.insert(0, f"listener {listener}")
    creds = {"devices": acc.devices, "operator": dict(zip(("username", "password"), acc.operator)),
             "hub": dict(zip(("username", "password"), acc.hub)) if acc.hub else None}
    paths = []
    for name, text in (("passwd", password_file(acc)), ("acl", acl_file(acc)),
                       ("mosquitto.conf", "\n".join(conf) + "\n"),
                       ("credentials.json", json.dumps(creds, indent=2, sort_keys=True) + "\n"),
                       ("nats-auth.conf", nats_authorization(acc))):
        path = out / name
        atomic_write(path, text.encode())       # created 0600 (mkstemp): credentials stay so
        if name in MODES:
            os.chmod(path, MODES[name])
        paths.append(path)
    return paths


def read_known(out: str | Path) -> dict[str, str]:
    """Passwords of an earlier run (``credentials.json`` in ``out``), by account name."""
    path = Path(out) / "credentials.json"
    if not path.is_file():
        return {}
    try:
        creds = json.loads(path.read_text())
        known = dict(creds.get("devices") or {})
        for role in ("operator", "hub"):
            if creds.get(role):
                known[creds[role]["username"]] = creds[role]["password"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"cannot read the earlier credentials: {exc}", where=str(path), code="usage.acl",
                         hint="move it away (or pass --rotate) to make new passwords for everybody") from None
    return known
