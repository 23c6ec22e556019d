"""Process bodies for the supervisor's process tests (module-level, so 'spawn' can import them)."""
import os
import signal
import time


def sleeper(seconds: float = 60.0) -> None:
    time.sleep(seconds)


def stubborn() -> None:
    """Ignores SIGTERM: only the shutdown timeout's SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def exits(code: int) -> None:
    os._exit(code)


def segfaults() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
