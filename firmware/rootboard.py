"""Which board a firmware root was installed for, kept where every later command can find it.

A board's ``[slots]`` table may put the slots and ``state.json`` anywhere under the root, so the
state cannot say where the state is. ``install`` therefore writes one small record at a fixed
place, ``<root>/ganglion/board.json``, whatever the board's own layout:

    {"format_version": 1, "board": "my-rpi4",
     "slots": {"base": "...", "a": "...", "b": "...", "state": "..."}, "max_boots": 3}

``resolve(root, board=None)`` turns a root (and an optional ``--board``) into the ``Layout`` to
use: the recorded one when no board is given, so ``status``/``validate``/``revert``/``boot`` and
``ganglion run --firmware-root`` need no ``--board``; the given board's when it agrees with the
record. A given board that contradicts the record (another name, or other slot paths) is an
error naming both, unless nothing is installed under the recorded layout (an install interrupted
before its switch left a record that no state uses yet). The slot paths are stored, not only the
name, so a root stays usable when the board file it came from moves or changes.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from core.artifact import atomic_write
from firmware.errors import SlotError
from firmware.slots import Layout, fsync_dir

RECORD = "ganglion/board.json"


def record_path(root) -> Path:
    return Path(root) / RECORD


def read(root) -> dict | None:
    """The record, or None on a root installed before records existed (or never installed)."""
    path = record_path(root)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise SlotError(f"the board record is unreadable: {exc}", where=str(path), code="firmware.state",
                        hint="pass --board explicitly, or reinstall with --force")
    slots = data.get("slots") if isinstance(data, dict) else None
    if not isinstance(slots, dict) or set(slots) != {"base", "a", "b", "state"} \
            or not all(isinstance(v, str) and v and not v.startswith("/") and ".." not in Path(v).parts
                       for v in slots.values()):
        raise SlotError("the board record is malformed", where=str(path), code="firmware.state",
                        hint="pass --board explicitly, or reinstall with --force")
    return data


def write(layout: Layout, board: str) -> None:
    """Record ``layout`` for ``board`` (atomic; called by ``install`` before the switch)."""
    data = {"format_version": 1, "board": board, "slots": layout.paths(),
            "max_boots": layout.max_boots}
    path = record_path(layout.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2).encode())
    fsync_dir(path.parent)


def from_record(root, data: dict) -> Layout:
    return Layout(Path(root), **data["slots"], board=data.get("board"), max_boots=data.get("max_boots"))


def resolve(root, board=None) -> Layout:
    """The layout for ``root``; ``board`` is a ``boards.Board`` (or None: use the record)."""
    data = read(root)
    if board is None:
        return from_record(root, data) if data else Layout(Path(root))
    given = Layout.for_root(root, board)
    if data is None:
        _check_state_board(given)
        return given
    if data.get("board") == given.board and data["slots"] == given.paths():
        return given
    recorded = from_record(root, data)
    if recorded.backend().load().active is None:
        return given
    other = "names other slot paths" if data.get("board") == given.board else "is another board"
    raise SlotError(f"--board {given.board} {other} than the one this root was installed for "
                    f"({data.get('board')}: {data['slots']})", where=str(record_path(root)),
                    code="firmware.board_mismatch",
                    hint=f"leave out --board (the root remembers {data.get('board')}), or install a bundle "
                         "for the new board with a fresh root")


def _check_state_board(given: Layout) -> None:
    """A root from before board records: its state still names the board it runs."""
    state = given.backend().load()
    if state.active is not None and state.board and state.board != given.board:
        raise SlotError(f"--board {given.board} is not the board this root runs ({state.board})",
                        where=str(given.state_path()), code="firmware.board_mismatch",
                        hint=f"pass --board {state.board} or leave it out")


def with_lock(fn):
    """Run a verb ``fn(root, ..., layout=...)`` under its root's lock (see ``Layout.lock``); with
    no layout given, the one the root was installed with (``resolve``)."""
    @functools.wraps(fn)
    def wrapper(root, *args, layout: "Layout | None" = None, **kwargs):
        if layout is None:
            layout = resolve(root)
        with layout.lock():
            return fn(root, *args, layout=layout, **kwargs)
    return wrapper
