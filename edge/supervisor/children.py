"""Child handles for threads and processes, so the supervisor treats both the same way.

A thread cannot be killed in Python: a thread child gets a stop ``Event`` and must check it;
one that ignores it past its shutdown timeout is abandoned (daemon thread) and reported. A
process child is sent SIGTERM, then SIGKILL after its timeout -- which is why model inference
runs in processes.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Callable

from edge.supervisor.spec import NORMAL, Exit


class ThreadChild:
    """Runs ``target(stop_event)`` in a thread. Returning is a normal exit; raising is not."""

    def __init__(self, target: Callable[[threading.Event], None], name: str):
        self.name = name
        self.stop_event = threading.Event()
        self._on_exit: Callable[[Exit], None] | None = None
        self._exit: Exit | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        self._thread.start()

    def _run(self, target) -> None:
        try:
            target(self.stop_event)
            exit_ = NORMAL
        except BaseException as exc:  # the supervisor decides what a crash means
            exit_ = Exit(False, f"{type(exc).__name__}: {exc}")
        self._deliver(exit_)

    def _deliver(self, exit_: Exit) -> None:
        with self._lock:
            self._exit = exit_
            callback = self._on_exit
        if callback:
            callback(exit_)

    def monitor(self, on_exit: Callable[[Exit], None]) -> None:
        with self._lock:
            self._on_exit = on_exit
            done = self._exit
        if done is not None:
            on_exit(done)

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class ProcessChild:
    """Wraps a started ``multiprocessing.Process``; a watcher thread reports its exit."""

    def __init__(self, process, name: str):
        self.name = name
        self.process = process
        self.exit: Exit | None = None
        self.exited = threading.Event()
        self._on_exit: Callable[[Exit], None] | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._watch, name=f"watch-{name}", daemon=True).start()

    def _watch(self) -> None:
        self.process.join()
        code = self.process.exitcode
        for _ in range(100):       # another thread's join may have reaped it a moment ago
            if code is not None:
                break
            time.sleep(0.01)
            code = self.process.exitcode
        if code == 0:
            self.exit = NORMAL
        elif code is not None and code < 0:
            self.exit = Exit(False, f"killed by {_signame(-code)}")
        else:
            self.exit = Exit(False, f"exit code {code}")
        self.exited.set()
        self._ready.wait()
        self._on_exit(self.exit)

    def monitor(self, on_exit: Callable[[Exit], None]) -> None:
        self._on_exit = on_exit
        self._ready.set()

    def stop(self, timeout: float) -> None:
        if self.alive:
            self.process.terminate()
            self.process.join(timeout)
        if self.alive:
            self.process.kill()
            self.process.join(2.0)
        self.exited.wait(2.0)        # the watcher has the exit status: ``alive`` is settled

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        # ``Process.is_alive`` says True for a process another thread (the watcher) reaped a
        # moment ago but has not recorded yet, so the watcher's verdict comes first.
        return not self.exited.is_set() and self.process.is_alive()


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
