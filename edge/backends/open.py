"""``open_backend``: the one door from a model file to a running backend.

Accepts a ``.gpk`` artifact (verified by ``core.artifact.read``: every member's sha256, and the
signature when trusted keys are configured), a bare ``.tflite`` or a bare ``.onnx`` (refused when
trusted keys are configured: a bare file has no signature, and a trusted key means nothing
unsigned runs). For an
artifact the model format comes from, in order: an explicit ``backend``, the board's backend,
then what is installed here (LiteRT first: it is the device default).
"""
from __future__ import annotations

from pathlib import Path

from core import artifact as gpk
from core import keys
from core.artifact import refuse_unsigned
from core.errors import InputError, RuntimeBackendError, UsageError
from core.litert import find_litert
from edge.backends.litert_backend import LiteRTBackend
from edge.backends.ort_backend import OnnxRuntimeBackend

FORMAT_OF_BACKEND = {"litert": "tflite", "onnxruntime": "onnx"}
BACKEND_OF_SUFFIX = {".tflite": "litert", ".onnx": "onnxruntime"}


def open_backend(source, *, board=None, threads: int | None = None, delegate: str | None = None,
                 allow_cpu_fallback: bool = False, trusted_keys=None, backend: str | None = None,
                 providers: list[str] | None = None, engine_cache_dir: str | None = None):
    """Open ``source`` (.gpk/.tflite/.onnx path) on the right backend. See ARCHITECTURE.md."""
    board = _board(board)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"model file not found: {path}", where=str(path), code="input.not_found")
    runtime = board_runtime(board)
    backend = backend or runtime.get("backend")
    threads = threads or runtime.get("threads")
    delegate = delegate or runtime.get("delegate")
    providers = providers or runtime.get("providers")
    engine_cache_dir = engine_cache_dir or runtime.get("engine_cache_dir")
    manifest, model = None, str(path)
    if path.suffix == ".gpk":
        art = read_artifact(path, _keys(trusted_keys))
        if trusted_keys and not art.signed:
            raise InputError("artifact is not signed but trusted keys are configured", where=str(path),
                             code="artifact.unsigned")
        manifest = art.manifest
        backend = backend or _default_backend(art)
        model = art.model_bytes(FORMAT_OF_BACKEND.get(backend, "tflite"))
    elif path.suffix in BACKEND_OF_SUFFIX:
        refuse_unsigned(path, trusted_keys)
        backend = BACKEND_OF_SUFFIX[path.suffix] if backend in (None, "auto") else backend
        if BACKEND_OF_SUFFIX[path.suffix] != backend:
            raise UsageError(f"a {path.suffix} file cannot run on the {backend} backend", where=str(path),
                             code="usage.backend_mismatch")
    else:
        raise InputError(f"unknown model file type {path.suffix!r}", where=str(path), code="input.model_type",
                         hint="pass a .gpk artifact, a .tflite or an .onnx file")
    result = _make(backend, model, threads=threads, delegate=delegate, providers=providers,
                   allow_cpu_fallback=allow_cpu_fallback, engine_cache_dir=engine_cache_dir, where=str(path),
                   manifest=manifest)
    result.manifest = manifest
    result.source = str(path)
    return result


def _make(backend: str | None, model, *, threads, delegate, providers, allow_cpu_fallback, engine_cache_dir,
          where, manifest=None):
    if backend in (None, "auto", "litert"):
        return LiteRTBackend(model, threads=threads, delegate=delegate,
                             allow_cpu_fallback=allow_cpu_fallback, where=where)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(model, threads=threads, providers=providers,
                                  allow_cpu_fallback=allow_cpu_fallback,
                                  engine_cache_dir=engine_cache_dir, where=where,
                                  manifest=manifest)     # TensorRT precision flags come from it
    raise UsageError(f"unknown backend {backend!r}", code="usage.backend", hint="use litert or onnxruntime")


def read_artifact(path: Path, trusted_keys):
    """``core.artifact.read``: it maps damaged members (bad zip data, zlib errors) to ArtifactError
    itself, so every failure here is already typed."""
    return gpk.read(path, trusted_keys=trusted_keys)


def _default_backend(art) -> str:
    formats = {e.get("format") for e in art.manifest.get("models", [])}
    if "tflite" in formats:
        try:
            find_litert()
            return "litert"
        except RuntimeBackendError:
            if "onnx" not in formats:
                raise
    return "onnxruntime" if "onnx" in formats else "litert"


def _board(board):
    if board is None or not isinstance(board, str):
        return board
    import boards  # optional here: pydantic (the board schema) loads only when a board is named, not per worker
    return boards.load(board)


def board_runtime(board) -> dict:
    """The runtime choices a board file makes (boards.schema.Runtime), as plain values."""
    rt = getattr(board, "runtime", None)
    if rt is None:
        return {}
    delegate = rt.delegate_library if rt.delegate in ("edgetpu", "gpu") and rt.delegate_library else None
    return {"backend": rt.backend, "threads": rt.threads or None, "delegate": delegate,
            "providers": list(rt.execution_providers) or None, "engine_cache_dir": rt.engine_cache_dir or None}


def _keys(trusted_keys):
    """Accept key objects or paths to .pub files."""
    if not trusted_keys:
        return None
    return keys.load_publics(trusted_keys)
