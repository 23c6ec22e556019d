"""A supervisor with OTP semantics (see spec.py for the vocabulary).

All decisions happen on one thread (the supervisor's loop), fed by a queue of child exits, so
there are no races between a crash report and a restart in progress. Each started child gets a
generation number; an exit from an older generation (a child we stopped on purpose) is ignored.

A supervisor is itself a ``Child``: nest one by passing ``sup.start`` as a child spec's start
function. When its restart intensity is exceeded it stops its children (in reverse order) and
exits abnormally; its parent then applies its own strategy -- that is escalation. The root's
exit goes to ``on_exit`` passed to ``monitor`` (the daemon shuts down and systemd takes over).
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable

from core.errors import UsageError
from edge.supervisor.spec import NORMAL, Child, ChildSpec, Exit, Restart, Strategy

EventSink = Callable[[dict], None]


class Supervisor:
    def __init__(self, name: str, children: list[ChildSpec], *, strategy: Strategy = Strategy.ONE_FOR_ONE,
                 max_restarts: int = 3, period: float = 5.0, on_event: EventSink | None = None,
                 clock: Callable[[], float] = time.monotonic):
        ids = [c.id for c in children]
        if len(set(ids)) != len(ids):
            raise UsageError(f"duplicate child ids in supervisor {name}: {ids}", code="usage.supervisor")
        self.name, self.strategy = name, Strategy(strategy)
        self.max_restarts, self.period = max_restarts, period
        self.specs: list[ChildSpec] = list(children)
        self.on_event = on_event or (lambda event: None)
        self.clock = clock
        self.restarts = 0                       # total, for metrics
        self._handles: dict[str, Child] = {}
        self._gen: dict[str, int] = {}
        self._history: deque[float] = deque()
        self._inbox: queue.Queue = queue.Queue()
        self._on_exit: Callable[[Exit], None] | None = None
        self._loop: threading.Thread | None = None
        self._exit: Exit | None = None

    # -- Child protocol ------------------------------------------------------------------------
    def start(self) -> "Supervisor":
        """Start children in order; if one fails to start, stop the started ones and raise.

        Calling it again after an exit starts afresh (a restarted nested supervisor has a clean
        restart history, as in OTP).
        """
        self._inbox, self._history, self._exit, self._handles = queue.Queue(), deque(), None, {}
        for spec in self.specs:
            try:
                self._start_child(spec)
            except BaseException:
                self._stop_children(list(self._handles))
                raise
        self._loop = threading.Thread(target=self._run, name=f"sup-{self.name}", daemon=True)
        self._loop.start()
        return self

    def monitor(self, on_exit: Callable[[Exit], None]) -> None:
        self._on_exit = on_exit

    def stop(self, timeout: float = 10.0) -> None:
        """Stop children in reverse start order, then the loop (a normal exit, not reported up)."""
        if self._loop is None:
            return
        if not self._loop.is_alive():           # it already gave up; its children are stopped
            self._stop_children(list(self._handles))
            return
        done = threading.Event()
        self._inbox.put(("stop", done))
        deadline = time.monotonic() + timeout + sum(s.shutdown for s in self.specs)
        # The loop may give up (stopping its children) and exit before it reads our message:
        # then nobody will set ``done``; stop waiting as soon as the loop is gone.
        while not done.wait(0.05) and self._loop.is_alive() and time.monotonic() < deadline:
            pass

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block until the supervisor exits (for the root); returns why, or None on timeout."""
        if self._loop is not None:
            self._loop.join(timeout)
        return self._exit

    def children(self) -> dict[str, Child]:
        return dict(self._handles)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            msg = self._inbox.get()
            if msg[0] == "stop":
                self._stop_children(list(self._handles))
                self._exit = NORMAL
                msg[1].set()
                return
            _, child_id, gen, exit_ = msg
            if self._gen.get(child_id) != gen or child_id not in self._handles:
                continue                        # a child we stopped on purpose
            if not self._handle_exit(child_id, exit_):
                self._give_up(child_id, exit_)
                return

    def _handle_exit(self, child_id: str, exit_: Exit) -> bool:
        """Apply restart type and strategy. False when the restart intensity is exceeded."""
        spec = self._spec(child_id)
        del self._handles[child_id]
        if not exit_.normal:
            self.on_event({"event": "crash", "supervisor": self.name, "child": child_id, "reason": exit_.reason})
        if spec.restart is Restart.TEMPORARY:
            self.specs = [s for s in self.specs if s.id != child_id]
            return True
        if spec.restart is Restart.TRANSIENT and exit_.normal:
            return True
        if not self._count_restart():
            return False
        ordered = [s.id for s in self.specs]
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [child_id]
        elif self.strategy is Strategy.REST_FOR_ONE:
            affected = ordered[ordered.index(child_id):]
        else:
            affected = ordered
        self._stop_children([c for c in affected if c != child_id])
        for cid in affected:
            if not self._restart_one(self._spec(cid), exit_ if cid == child_id else None):
                return True                     # its failure is queued as an exit and counted
        return True

    def _restart_one(self, spec: ChildSpec, exit_: Exit | None) -> bool:
        try:
            self._start_child(spec)
        except Exception as exc:                # a failed start counts as another crash
            gen = self._next_gen(spec.id)
            self._handles[spec.id] = _Dead()
            self._inbox.put(("exit", spec.id, gen, Exit(False, f"start failed: {type(exc).__name__}: {exc}")))
            return False
        self.restarts += 1
        self.on_event({"event": "restart", "supervisor": self.name, "child": spec.id,
                       "reason": exit_.reason if exit_ else f"{self.strategy.value} sibling restart"})
        return True

    def _count_restart(self) -> bool:
        now = self.clock()
        while self._history and self._history[0] <= now - self.period:
            self._history.popleft()
        self._history.append(now)
        return len(self._history) <= self.max_restarts

    def _give_up(self, child_id: str, exit_: Exit) -> None:
        reason = (f"reached max restart intensity ({self.max_restarts} in {self.period:g}s); "
                  f"last: {child_id} {exit_.reason}")
        self.on_event({"event": "escalation", "supervisor": self.name, "child": child_id, "reason": reason})
        self._stop_children(list(self._handles))
        self._exit = Exit(False, f"shutdown: {reason}")
        if self._on_exit:
            self._on_exit(self._exit)

    # -- helpers -------------------------------------------------------------------------------
    def _start_child(self, spec: ChildSpec) -> None:
        handle = spec.start()
        gen = self._next_gen(spec.id)
        self._handles[spec.id] = handle
        handle.monitor(lambda exit_, cid=spec.id, g=gen: self._inbox.put(("exit", cid, g, exit_)))

    def _stop_children(self, ids: list[str]) -> None:
        order = [s.id for s in self.specs]
        for cid in sorted(ids, key=lambda c: order.index(c) if c in order else -1, reverse=True):
            handle = self._handles.pop(cid, None)
            if handle is None:
                continue
            self._next_gen(cid)      # its exit is now expected
            handle.stop(self._spec(cid).shutdown if cid in order else 1.0)

    def _next_gen(self, child_id: str) -> int:
        """A new generation for the child: exits reported under an older one are ignored."""
        self._gen[child_id] = gen = self._gen.get(child_id, 0) + 1
        return gen

    def _spec(self, child_id: str) -> ChildSpec:
        return next(s for s in self.specs if s.id == child_id)

    def describe(self, indent: int = 0) -> list[str]:
        """The tree as text lines (``ganglion run --dry-run``)."""
        pad = "  " * indent
        lines = [f"{pad}{self.name} (supervisor: {self.strategy.value}, "
                 f"max {self.max_restarts} restarts / {self.period:g}s)"]
        for spec in self.specs:
            if spec.describe is not None:
                lines.extend(spec.describe(indent + 1))
                continue
            note = f" -- {spec.note}" if spec.note else ""
            lines.append(f"{pad}  {spec.id} ({spec.kind}, {spec.restart.value}, "
                         f"shutdown {spec.shutdown:g}s){note}")
        return lines


class _Dead:
    """Placeholder for a child whose restart failed; its exit is already queued."""

    def monitor(self, on_exit) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass
