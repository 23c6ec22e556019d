"""Boards as data: one TOML per board in this folder, validated by one schema (``boards.schema``).

    boards.names()            -> the shipped board names, sorted
    boards.load("rpi4")       -> a frozen ``Board``; a path to a .toml file loads a user board
"""
from __future__ import annotations

from pathlib import Path

from boards.schema import Board, BoardError, load_file

__all__ = ["Board", "BoardError", "load", "names", "BOARDS_DIR"]

BOARDS_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Board:
    """A shipped board by name, or any board file by path (anything ending in .toml or holding '/')."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return load_file(text)
    path = BOARDS_DIR / f"{text}.toml"
    if not path.is_file():
        raise BoardError(f"unknown board {text!r}", where=str(BOARDS_DIR), code="board.unknown",
                         hint=f"known boards: {', '.join(names())}; or pass a path to your own .toml")
    board = load_file(path)
    if board.name != text:
        raise BoardError(f"board file {path.name} declares name {board.name!r}", where=str(path),
                         code="board.inconsistent", hint="the file name and 'name' must agree")
    return board
