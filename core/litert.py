"""Find a LiteRT (TFLite) interpreter: ai_edge_litert, then tflite_runtime, then tensorflow.lite.

``ai-edge-litert`` is the maintained successor of ``tflite-runtime`` (which fails with NumPy 2 at
the first interpreter it builds). Everything in Ganglion builds interpreters through
``make_interpreter`` so the choice, and the message when none is present, live in one place.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from types import ModuleType

from core.errors import RuntimeBackendError

# Tried in order; (import name, module that holds Interpreter / load_delegate).
CANDIDATES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


@dataclass(frozen=True)
class LiteRT:
    name: str            # which package provided it
    module: ModuleType   # has Interpreter and load_delegate

    @property
    def version(self) -> str:
        top = importlib.import_module(self.name)
        return getattr(top, "__version__", "unknown")


_found: LiteRT | None = None
# Native INFO lines LiteRT writes straight to fd 2 (its minimal logger; no environment variable
# turns it off: TF_CPP_MIN_LOG_LEVEL=3 was tried, before and after the import). Dropped; any
# other native output is passed on.
NATIVE_NOISE = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
_fd_lock = threading.Lock()


@contextlib.contextmanager
def quiet_native_info():
    """Capture fd 2 around native calls and write back everything but ``NATIVE_NOISE`` lines."""
    try:
        fd = sys.stderr.fileno() if sys.stderr is not None else 2
    except (AttributeError, ValueError, OSError):      # a stream without a descriptor (pytest capture)
        fd = 2
    with _fd_lock, tempfile.TemporaryFile() as sink:
        sys.stderr and sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True)
                    if not line.rstrip().startswith(NATIVE_NOISE)]
            if kept:
                os.write(fd, b"".join(kept))


def find_litert() -> LiteRT:
    """Return the first LiteRT implementation that imports, or raise with an install hint."""
    global _found
    if _found is not None:
        return _found
    errors = []
    for name, module_name in CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        _found = LiteRT(name=name, module=module)
        return _found
    raise RuntimeBackendError(
        "no LiteRT interpreter is installed (" + "; ".join(errors) + ")",
        code="runtime.no_litert",
        hint="pip install ai-edge-litert  (the maintained successor of tflite-runtime)")


def make_interpreter(model: bytes | str, *, num_threads: int | None = None,
                     delegates: list | None = None, use_xnnpack: bool = True,
                     preserve_all_tensors: bool = False):
    """Build and allocate an interpreter from a path or flatbuffer bytes."""
    lite = find_litert()
    kwargs = {}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = str(model)
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = lite.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet_native_info():
            interp = lite.module.Interpreter(**kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise RuntimeBackendError(f"LiteRT could not load the model: {exc}",
                                  code="runtime.model_load",
                                  hint="run 'ganglion inspect' on the file; re-convert it") from exc
    return interp


def load_delegate(path: str):
    """An external delegate loaded by path: ``(delegate, None)``, or ``(None, why it failed)``.

    Failures are a missing file, a file that is not a shared library, and a real library that is
    not a delegate (no ``tflite_plugin_create_delegate``: LiteRT reports that as an AttributeError
    from its ctypes lookup). The backend turns a failure into ``runtime.delegate_missing`` or a
    CPU fallback; ``ganglion doctor --delegate PATH`` prints it."""
    lite = find_litert()
    try:
        return lite.module.load_delegate(path), None
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        # returned as text, not raised with the exception attached: LiteRT's half-built Delegate
        # sits in that traceback and its __del__ misbehaves whenever the traceback is dropped
        return None, str(exc)
