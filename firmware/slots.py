"""A/B slot state: which slot runs, what each holds, and what failed, behind a two-method backend.

The state is one small JSON document. Every change is a whole-document replacement through the
backend's ``save``; the file backend writes a temp file, fsyncs it, renames it over the old one and
fsyncs the folder, so a power cut or SIGKILL leaves either the old or the new state, never a mix.
That rename is the atomic "switch" of an install.

    {"active": "b", "previous": "a", "board": "rpi4", "max_boots": 3, "max_retries": 3,
     "slots": {"a": {"status": "valid", "version": "1.0.0", "boot_count": 0, ...},
               "b": {"status": "unvalidated", "version": "1.1.0", "boot_count": 1, "max_boots": 5, ...}},
     "failed_versions": {"0.9.0": {"reason": "...", "class": "permanent", "at": "..."}},
     "retries": {"1.1.0": {"count": 1, "reason": "...", "at": "..."}},
     "history": [{"at": "...", "event": "installed", ...}, ...]}

Slot status: ``empty`` -> (install) ``unvalidated`` -> (validate) ``valid``, or -> (self-test
fails / boot counter past the slot's ``max_boots``) ``failed``. ``failed_versions`` are never
installed again (unless forced by hand); ``retries`` counts versions whose last failure was
transient (``firmware/failures.py`` holds that rule). Backends: ``FileStateBackend`` (devices and
tests) and ``MemoryStateBackend`` (unit tests of the state logic).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.version import InvalidVersion, Version

from core.artifact import atomic_write
from firmware.errors import SlotError

SLOTS = ("a", "b")
STATUSES = ("empty", "unvalidated", "valid", "failed")
DEFAULT_MAX_BOOTS = 3
MAX_BOOTS_RANGE = (1, 10)      # fewer than one trial boot is no trial; more only delays a revert
DEFAULT_MAX_RETRIES = 3        # transient failures a version may have before it is refused too
HISTORY_LIMIT = 50


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_version(text: str) -> Version:
    """A bundle version, ordered as PEP 440 says (https://peps.python.org/pep-0440/#summary-of-permitted-suffixes-and-relative-ordering):
    1.9.0 < 1.10.0, 1.2 == 1.2.0, 1.2.0rc1 < 1.2.0 < 1.2.0.post1, 1.2.0 < 1.2.0+local."""
    try:
        if isinstance(text, str) and text.strip() == text:
            return Version(text)
    except InvalidVersion:
        pass
    raise SlotError(f"version {text!r} is not a PEP 440 version (e.g. 1.4.0, 1.4.0rc1)", code="firmware.version")


def version_order(item) -> tuple:
    """Sort key for version strings (or ``(version, value)`` pairs) in PEP 440 order, 1.9.0 before
    1.10.0; strings that are not versions (a hand-edited state file) sort last, as text."""
    text = item[0] if isinstance(item, tuple) else item
    try:
        return (0, parse_version(text), "")
    except SlotError:
        return (1, None, str(text))


def find_version(versions, version: str) -> str | None:
    """The key of ``versions`` (a dict or list of version strings) equal to ``version`` under PEP
    440 ('1.2' is '1.2.0'); keys that are not versions (a hand-edited state file) never match."""
    if version in versions:
        return version
    wanted = parse_version(version)
    for key in versions:
        try:
            if parse_version(key) == wanted:
                return key
        except SlotError:
            continue
    return None


@dataclass
class SlotState:
    active: str | None = None
    previous: str | None = None
    board: str | None = None
    max_boots: int = DEFAULT_MAX_BOOTS
    slots: dict = field(default_factory=lambda: {s: {"status": "empty"} for s in SLOTS})
    failed_versions: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    retries: dict = field(default_factory=dict)
    max_retries: int = DEFAULT_MAX_RETRIES

    def inactive(self) -> str:
        return "b" if self.active == "a" else "a"

    def slot(self, name: str) -> dict:
        return self.slots[name]

    def active_version(self) -> str | None:
        return self.slots[self.active].get("version") if self.active else None

    def max_boots_of(self, name: str) -> int:
        """A trial's own bound (``install --max-boots``), else the root's default."""
        return int(self.slots[name].get("max_boots", self.max_boots))

    def note(self, event: str, **detail) -> None:
        self.history.append({"at": now(), "event": event, **detail})
        del self.history[:-HISTORY_LIMIT]

    def to_dict(self) -> dict:
        return {"format_version": 1, "active": self.active, "previous": self.previous,
                "board": self.board, "max_boots": self.max_boots, "slots": self.slots,
                "failed_versions": self.failed_versions, "retries": self.retries,
                "max_retries": self.max_retries, "history": self.history}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "SlotState":
        try:
            state = cls(active=data["active"], previous=data.get("previous"), board=data.get("board"),
                        max_boots=int(data.get("max_boots", DEFAULT_MAX_BOOTS)),
                        slots=data["slots"], failed_versions=data.get("failed_versions", {}),
                        history=data.get("history", []), retries=data.get("retries", {}),
                        max_retries=int(data.get("max_retries", DEFAULT_MAX_RETRIES)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SlotError(f"slot state is malformed: {exc}", where=where, code="firmware.state")
        if state.active not in (None, *SLOTS) or state.previous not in (None, *SLOTS) \
                or set(state.slots) != set(SLOTS) or not isinstance(state.retries, dict) \
                or any(s.get("status") not in STATUSES for s in state.slots.values()):
            raise SlotError("slot state names unknown slots or statuses", where=where, code="firmware.state")
        return state


class StateBackend(Protocol):
    def load(self) -> SlotState: ...
    def save(self, state: SlotState) -> None: ...


class MemoryStateBackend:
    """Keeps the state as JSON text in memory (round-trips like the file, so bugs show the same)."""

    def __init__(self):
        self.text: str | None = None

    def load(self) -> SlotState:
        if self.text is None:
            return SlotState()
        return SlotState.from_dict(json.loads(self.text), "<memory>")

    def save(self, state: SlotState) -> None:
        self.text = json.dumps(state.to_dict())


class FileStateBackend:
    """state.json under the install root; replaced atomically (temp + fsync + rename + dir fsync)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> SlotState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return SlotState()
        except OSError as exc:
            raise SlotError(f"cannot read slot state: {exc}", where=str(self.path), code="firmware.state")
        try:
            data = json.loads(text)
        except ValueError as exc:
            # atomic_write never leaves a torn file, so this is outside damage: say so, do not guess.
            raise SlotError(f"slot state is not JSON: {exc}", where=str(self.path), code="firmware.state",
                            hint="restore it from the history or reinstall with --force")
        return SlotState.from_dict(data, str(self.path))

    def save(self, state: SlotState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(state.to_dict(), indent=2).encode())
        fsync_dir(self.path.parent)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink inside ``path`` durable (the directory entry itself is data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Layout:
    """Where a root keeps its slots and state (the board TOML's [slots] table, root-relative),
    and which board it is for (``None``: not known yet; ``firmware/rootboard.py`` records it)."""
    root: Path
    base: str = "ganglion"
    a: str = "ganglion/slots/a"
    b: str = "ganglion/slots/b"
    state: str = "ganglion/state.json"
    board: str | None = None
    max_boots: int | None = None      # the board's [slots] max_boots, the default for new trials

    @classmethod
    def for_root(cls, root: str | Path, board=None) -> "Layout":
        if board is None:
            return cls(Path(root))
        s = board.slots
        return cls(Path(root), base=s.base, a=s.a, b=s.b, state=s.state, board=board.name,
                   max_boots=getattr(s, "max_boots", None))

    def paths(self) -> dict:
        return {"base": self.base, "a": self.a, "b": self.b, "state": self.state}

    def slot_dir(self, name: str) -> Path:
        return self.root / (self.a if name == "a" else self.b)

    def staging_dir(self, name: str) -> Path:
        path = self.slot_dir(name)
        return path.with_name(f".{path.name}.staging")

    def state_path(self) -> Path:
        return self.root / self.state

    def backend(self) -> FileStateBackend:
        return FileStateBackend(self.state_path())

    def lock_path(self) -> Path:
        return self.root / self.base / ".lock"

    @contextlib.contextmanager
    def lock(self):
        """One firmware operation at a time per root (an OTA install and a CLI revert must not mix).

        flock(2), not a lock file's existence: the kernel drops the lock when its holder dies, so a
        SIGKILLed install never leaves the root locked. Re-entrant within a process (validate ->
        revert), since a second flock on a new descriptor would wait for ourselves."""
        key = str(self.lock_path())
        held = _held.__dict__.setdefault("counts", {})   # per thread: another thread must wait its turn
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        self.lock_path().parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SlotError("another firmware operation is running on this root", where=key,
                                code="firmware.busy", hint="wait for it to finish, then retry") from None
            held[key] = 1
            try:
                yield
            finally:
                del held[key]
        finally:
            os.close(fd)   # closing the descriptor releases the flock


_held = threading.local()
