"""The vocabulary of supervision: restart types, strategies, child specs, exits.

Follows OTP's supervisor (https://www.erlang.org/doc/system/sup_princ.html):

- restart: ``permanent`` children are always restarted, ``transient`` only after an abnormal
  exit, ``temporary`` never (and are forgotten once they exit).
- strategy: ``one_for_one`` restarts the child that exited; ``rest_for_one`` also restarts the
  children started after it; ``one_for_all`` restarts every child.
- intensity: more than ``max_restarts`` restarts within ``period`` seconds and the supervisor
  stops all its children and exits abnormally, so its parent decides (escalation).
- shutdown: seconds a child gets to stop before it is killed (processes) or abandoned (threads).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol


class Restart(str, Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(str, Enum):
    ONE_FOR_ONE = "one_for_one"
    REST_FOR_ONE = "rest_for_one"
    ONE_FOR_ALL = "one_for_all"


@dataclass(frozen=True)
class Exit:
    """Why a child stopped. ``normal`` exits of transient children are not restarted."""
    normal: bool
    reason: str


NORMAL = Exit(True, "normal")


class Child(Protocol):
    """A running child: a thread, a process, or a nested supervisor."""

    def monitor(self, on_exit: Callable[[Exit], None]) -> None:
        """Call ``on_exit`` once, from any thread, when the child stops for any reason."""

    def stop(self, timeout: float) -> None:
        """Ask the child to stop; force it after ``timeout`` seconds where possible."""


@dataclass(frozen=True)
class ChildSpec:
    id: str
    start: Callable[[], Child]                 # starts the child and returns its handle
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    kind: str = "worker"                       # "worker" or "supervisor" (for printing the tree)
    describe: Callable[[], list[str]] | None = None   # nested supervisors print themselves
    note: str = ""                             # one line shown by `ganglion run --dry-run`
