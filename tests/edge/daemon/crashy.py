"""Backends that misbehave on purpose, loaded in real worker processes by "module:function" name.

They stand in for a native kernel that segfaults: the worker process really dies with SIGSEGV,
which is exactly what the supervisor and the retry logic must survive.
"""
import os
import signal
import time

from edge.backends import MemoryBackend, TensorSpec

SPECS = ([TensorSpec("x", "float32", (-1, 4))], [TensorSpec("y", "float32", (-1, 4))])


def _segfault():
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def always():
    """Crashes on every request."""
    return MemoryBackend(*SPECS, lambda f: _segfault())


def on_poison():
    """Crashes when any value is below -100 (a 'poison' sample); doubles otherwise."""
    def fn(f):
        if (f["x"] < -100).any():
            _segfault()
        return {"y": f["x"] * 2}
    return MemoryBackend(*SPECS, fn)


def raises_on_poison():
    """A backend bug (a Python exception, not a crash) when any value is below -100."""
    def fn(f):
        if (f["x"] < -100).any():
            raise ZeroDivisionError("a bug in the backend")
        return {"y": f["x"] * 2}
    return MemoryBackend(*SPECS, fn)


def slow(delay_s: float = 0.05):
    def fn(f):
        time.sleep(delay_s)
        return {"y": f["x"] * 2}
    return MemoryBackend(*SPECS, fn)


def broken():
    from core.errors import RuntimeBackendError
    raise RuntimeBackendError("this model cannot be opened", code="runtime.model_load")


BIG = 100_000       # 400 KB of float32 per sample: large enough for the shared-memory path


def big():
    """y = sum(x) per sample over a large input; crashes when the first value is -1."""
    def fn(f):
        if (f["x"][:, 0] == -1).any():
            _segfault()
        return {"y": f["x"].sum(axis=1, keepdims=True).repeat(4, axis=1)}
    return MemoryBackend([TensorSpec("x", "float32", (-1, BIG))], [TensorSpec("y", "float32", (-1, 4))], fn)


def hangs_on_poison():
    """Never answers when any value is below -100 (a hung kernel); doubles otherwise."""
    def fn(f):
        if (f["x"] < -100).any():
            time.sleep(3600)
        return {"y": f["x"] * 2}
    return MemoryBackend(*SPECS, fn)
