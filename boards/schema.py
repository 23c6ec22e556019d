"""The one schema every board TOML is validated against: frozen dataclasses and their loader.

A board file has six tables (``[python]``, ``[runtime]``, ``[artifact]``, ``[resources]``,
``[slots]`` and top-level keys). Loading checks every key against the dataclass that holds it:
unknown keys (typos), missing keys, wrong types and values outside a closed set each raise
``BoardError`` naming the file, the dotted key, what was expected and what was found. Rules that
span keys (an Edge TPU delegate needs its library, ONNX Runtime needs execution providers, a
platform tag must name the board's architecture) are checked after the fields, in ``_cross_check``.

Troubleshooting: ``ganglion boards show FILE.toml`` loads a user board file with the same checks.
"""
from __future__ import annotations

import re
import sys
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath

from core.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the device may run 3.10
    import tomli as tomllib

ARCHITECTURES = ("aarch64", "armv7l", "x86_64")
BACKENDS = ("litert", "onnxruntime")
DELEGATES = ("none", "xnnpack", "edgetpu", "gpu")
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
FORMATS = ("tflite", "onnx")
IO_TYPES = ("float32", "int8", "uint8")


class BoardError(InputError):
    code = "board.invalid"


def choice(*values: str, default=MISSING):
    """A string field limited to ``values``; the loader reports the allowed set on a mismatch."""
    return field(default=default, metadata={"choices": values})


@dataclass(frozen=True)
class PythonSpec:
    version: str                      # "3.11": the interpreter on the board's OS
    platform_tags: tuple[str, ...]    # pip matches exactly, so list every manylinux tag that fits
    requirements: tuple[str, ...]     # what the board's bundle installs (pip requirement strings)
    implementation: str = choice("cp", default="cp")


@dataclass(frozen=True)
class Runtime:
    backend: str = choice(*BACKENDS)
    delegate: str = choice(*DELEGATES, default="none")
    delegate_library: str = ""        # e.g. libedgetpu.so.1 for the Edge TPU
    execution_providers: tuple[str, ...] = ()   # ONNX Runtime, in priority order
    engine_cache_dir: str = ""        # TensorRT engine cache (absolute, on the device)
    threads: int = 1


@dataclass(frozen=True)
class ArtifactPrefs:
    format: str = choice(*FORMATS)
    input_type: str = choice(*IO_TYPES, default="float32")
    output_type: str = choice(*IO_TYPES, default="float32")


@dataclass(frozen=True)
class Resources:
    memory_budget_mb: int
    thermal_sensors: tuple[str, ...] = ()   # absolute sysfs paths read by the daemon's metrics


@dataclass(frozen=True)
class SlotLayout:
    """Where firmware lives, relative to the install root (``/`` on a device, a folder in tests)."""
    base: str = "ganglion"
    a: str = "ganglion/slots/a"
    b: str = "ganglion/slots/b"
    state: str = "ganglion/state.json"
    max_boots: int = 3      # trial starts a new slot gets to validate (firmware install --max-boots overrides)


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    architecture: str = choice(*ARCHITECTURES)
    python: PythonSpec = None
    runtime: Runtime = None
    artifact: ArtifactPrefs = None
    resources: Resources = None
    slots: SlotLayout = field(default_factory=SlotLayout)
    source: str = field(default="", metadata={"internal": True})   # the file it came from

    def to_dict(self) -> dict:
        return asdict(self)


def load_file(path: str | Path) -> Board:
    """Parse and validate one board TOML; every problem raises BoardError with file and key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BoardError(f"cannot read board file: {exc}", where=str(path), code="board.unreadable")
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"not valid TOML: {exc}", where=str(path), code="board.toml",
                         hint="check quoting and brackets; see boards/rpi4.toml for a complete example")
    board = replace(_build(Board, data, str(path), ""), source=str(path))
    _cross_check(board, str(path))
    return board


def _build(cls, table, file: str, prefix: str):
    """Build dataclass ``cls`` from a TOML table, checking keys, types and closed sets."""
    if not isinstance(table, dict):
        raise _err(file, prefix.rstrip("."), "a table", table)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in known:
            raise BoardError(f"unknown key {prefix}{key!s}", where=f"{file}: {prefix}{key}",
                             code="board.unknown_key",
                             hint=f"allowed here: {', '.join(sorted(known))}")
    values = {}
    for name, f in known.items():
        key = prefix + name
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise BoardError(f"missing key {key}", where=f"{file}: {key}", code="board.missing_key",
                                 hint=f"add '{name} = ...' ({_describe(hints[name])})")
            if f.default is None and _is_dataclass(hints[name]):
                raise BoardError(f"missing table [{key}]", where=f"{file}: {key}", code="board.missing_key")
            continue
        values[name] = _convert(hints[name], table[name], f, file, key)
    return cls(**values)


def _convert(hint, value, f, file: str, key: str):
    if _is_dataclass(hint):
        return _build(hint, value, file, key + ".")
    if hint is str:
        if not isinstance(value, str):
            raise _err(file, key, "a string", value)
        allowed = f.metadata.get("choices")
        if allowed and value not in allowed:
            raise BoardError(f"{key} must be one of {', '.join(allowed)}; got {value!r}",
                             where=f"{file}: {key}", code="board.bad_value")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(file, key, "an integer", value)
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _err(file, key, "a list of strings", value)
        return tuple(value)
    raise BoardError(f"schema has no rule for {key}", where=file)  # a bug in this module


def _is_dataclass(hint) -> bool:
    return isinstance(hint, type) and hasattr(hint, "__dataclass_fields__")


def _describe(hint) -> str:
    if _is_dataclass(hint):
        return "a table"
    return {str: "a string", int: "an integer"}.get(hint, "a list of strings")


def _err(file: str, key: str, expected: str, got) -> BoardError:
    return BoardError(f"{key or 'the file'} must be {expected}; got {type(got).__name__} {got!r}",
                      where=f"{file}: {key}", code="board.bad_type")


def _cross_check(board: Board, file: str) -> None:
    """Rules that involve more than one key."""
    def fail(key: str, message: str, hint: str | None = None):
        raise BoardError(message, where=f"{file}: {key}", code="board.inconsistent", hint=hint)

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", board.name):
        fail("name", f"board name {board.name!r} must be lowercase letters, digits, '-' and '_'")
    if not re.fullmatch(r"3\.\d{1,2}", board.python.version):
        fail("python.version", f"python.version must look like '3.11'; got {board.python.version!r}")
    if not board.python.platform_tags:
        fail("python.platform_tags", "python.platform_tags is empty",
             "list every manylinux tag the board's glibc accepts; pip matches tags exactly")
    for tag in board.python.platform_tags:
        if not tag.endswith("_" + board.architecture):
            fail("python.platform_tags", f"platform tag {tag!r} does not match architecture "
                 f"{board.architecture!r}")
    _check_runtime(board, fail)
    if board.runtime.threads < 1:
        fail("runtime.threads", f"runtime.threads must be >= 1; got {board.runtime.threads}")
    if board.resources.memory_budget_mb < 16:
        fail("resources.memory_budget_mb", "resources.memory_budget_mb must be at least 16")
    for sensor in board.resources.thermal_sensors:
        if not sensor.startswith("/"):
            fail("resources.thermal_sensors", f"thermal sensor path {sensor!r} must be absolute")
    for name in ("base", "a", "b", "state"):
        value = getattr(board.slots, name)
        parts = PurePosixPath(value).parts
        if not value or value.startswith("/") or ".." in parts:
            fail(f"slots.{name}", f"slots.{name} must be a relative path inside the root; got {value!r}")
    if board.slots.a == board.slots.b:
        fail("slots.b", "slots.a and slots.b must differ")
    if not 1 <= board.slots.max_boots <= 10:
        fail("slots.max_boots", f"slots.max_boots must be 1..10; got {board.slots.max_boots}",
             "the number of starts a new slot gets to pass its health check before it is reverted")


def _check_runtime(board: Board, fail) -> None:
    rt = board.runtime
    if rt.backend == "litert":
        if board.artifact.format != "tflite":
            fail("artifact.format", "the litert backend runs tflite artifacts; set artifact.format = \"tflite\"")
        if rt.execution_providers:
            fail("runtime.execution_providers", "execution_providers are for the onnxruntime backend")
        if rt.delegate == "edgetpu" and not rt.delegate_library:
            fail("runtime.delegate_library", "the edgetpu delegate needs delegate_library",
                 "e.g. delegate_library = \"libedgetpu.so.1\"")
    else:
        if board.artifact.format != "onnx":
            fail("artifact.format", "the onnxruntime backend runs QDQ onnx artifacts; set artifact.format = \"onnx\"")
        if rt.delegate != "none":
            fail("runtime.delegate", "delegates are for the litert backend; use execution_providers")
        if not rt.execution_providers:
            fail("runtime.execution_providers", "the onnxruntime backend needs execution_providers",
                 f"choose from {', '.join(PROVIDERS)}")
        for ep in rt.execution_providers:
            if ep not in PROVIDERS:
                fail("runtime.execution_providers", f"unknown execution provider {ep!r}",
                     f"choose from {', '.join(PROVIDERS)}")
        if "TensorrtExecutionProvider" in rt.execution_providers and not rt.engine_cache_dir.startswith("/"):
            fail("runtime.engine_cache_dir", "TensorRT needs an absolute engine_cache_dir",
                 "building engines takes minutes; caching them is what makes a restart fast")
