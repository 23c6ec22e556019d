"""The one schema every board TOML is validated against (``core.config.Schema`` models) and its loader.

A board file has six tables (``[python]``, ``[runtime]``, ``[artifact]``, ``[resources]``,
``[slots]`` and top-level keys). Loading checks every key against the model that holds it:
unknown keys (typos), missing keys, wrong types and values outside a closed set
(``core.config``: ``Architecture``, ``Backend``, ``Delegate``, ...) are each reported, all at once,
as one ``BoardError`` naming the file, the dotted key, what was expected and what was found. Rules
that span keys (an Edge TPU delegate needs its library, ONNX Runtime needs execution providers, a
platform tag must name the board's architecture) are model validators on ``Board``: the same load.

Troubleshooting: ``ganglion boards show FILE.toml`` loads a user board file with the same checks.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import ClassVar

from pydantic import Field, model_validator

from core.config import (ArtifactFormat, Architecture, Backend, Delegate, IoType, Provider, Rules, Schema, Strings,
                         load, read_toml, values)
from core.errors import InputError

ARCHITECTURES = values(Architecture)
BACKENDS = values(Backend)
DELEGATES = values(Delegate)
PROVIDERS = values(Provider)
FORMATS = values(ArtifactFormat)
IO_TYPES = values(IoType)


class BoardError(InputError):
    code = "board.invalid"


class BoardSchema(Schema):
    error: ClassVar = BoardError
    codes: ClassVar = {"unknown_key": "board.unknown_key", "missing_key": "board.missing_key",
                       "bad_type": "board.bad_type", "bad_value": "board.bad_value", "rule": "board.inconsistent"}


class PythonSpec(BoardSchema):
    version: str                      # "3.11": the interpreter on the board's OS
    platform_tags: Strings            # pip matches exactly, so list every manylinux tag that fits
    requirements: Strings             # what the board's bundle installs (pip requirement strings)
    implementation: str = "cp"


class Runtime(BoardSchema):
    backend: Backend
    delegate: Delegate = "none"
    delegate_library: str = ""        # e.g. libedgetpu.so.1 for the Edge TPU
    execution_providers: Strings = ()   # ONNX Runtime, in priority order
    engine_cache_dir: str = ""        # TensorRT engine cache (absolute, on the device)
    threads: int = Field(1, ge=1)


class ArtifactPrefs(BoardSchema):
    format: ArtifactFormat
    input_type: IoType = "float32"
    output_type: IoType = "float32"


class Resources(BoardSchema):
    memory_budget_mb: int = Field(ge=16)
    thermal_sensors: Strings = ()   # absolute sysfs paths read by the daemon's metrics


class SlotLayout(BoardSchema):
    """Where firmware lives, relative to the install root (``/`` on a device, a folder in tests)."""
    base: str = "ganglion"
    a: str = "ganglion/slots/a"
    b: str = "ganglion/slots/b"
    state: str = "ganglion/state.json"
    # trial starts a new slot gets to validate (firmware install --max-boots overrides)
    max_boots: int = Field(3, ge=1, le=10)


class Board(BoardSchema):
    name: str
    description: str
    architecture: Architecture
    python: PythonSpec
    runtime: Runtime
    artifact: ArtifactPrefs
    resources: Resources
    slots: SlotLayout = SlotLayout()
    source: str = Field("", exclude=True)   # the file it came from (set by the loader, not in the TOML)

    @model_validator(mode="after")
    def _cross_check(self):
        rules = Rules()
        _check_board(self, rules)
        _check_runtime(self, rules)
        rules.done()
        return self

    def to_dict(self) -> dict:
        return self.model_dump()


def load_file(path: str | Path) -> Board:
    """Parse and validate one board TOML; every problem is reported in one BoardError with file and key."""
    path = Path(path)
    data = read_toml(path, BoardError, code="board.unreadable", toml_code="board.toml")
    if "source" in data:      # the loader's field, not a setting: a file that sets it is told so
        data = {("source (set by the loader)" if k == "source" else k): v for k, v in data.items()}
    return load(Board, data, file=str(path)).model_copy(update={"source": str(path)})


def _check_board(board: Board, rules: Rules) -> None:
    """Rules that involve more than one key, or a pattern."""
    rules.check(re.fullmatch(r"[a-z0-9][a-z0-9_-]*", board.name), "name",
                f"board name {board.name!r} must be lowercase letters, digits, '-' and '_'")
    rules.check(re.fullmatch(r"3\.\d{1,2}", board.python.version), "python.version",
                f"python.version must look like '3.11'; got {board.python.version!r}")
    rules.check(bool(board.python.platform_tags), "python.platform_tags", "python.platform_tags is empty",
                "list every manylinux tag the board's glibc accepts; pip matches tags exactly")
    for tag in board.python.platform_tags:
        rules.check(tag.endswith("_" + board.architecture), "python.platform_tags",
                    f"platform tag {tag!r} does not match architecture {board.architecture!r}")
    for sensor in board.resources.thermal_sensors:
        rules.check(sensor.startswith("/"), "resources.thermal_sensors",
                    f"thermal sensor path {sensor!r} must be absolute")
    for name in ("base", "a", "b", "state"):
        value = getattr(board.slots, name)
        rules.check(bool(value) and not value.startswith("/") and ".." not in PurePosixPath(value).parts,
                    f"slots.{name}", f"slots.{name} must be a relative path inside the root; got {value!r}")
    rules.check(board.slots.a != board.slots.b, "slots.b", "slots.a and slots.b must differ")


def _check_runtime(board: Board, rules: Rules) -> None:
    rt = board.runtime
    if rt.backend == "litert":
        rules.check(board.artifact.format == "tflite", "artifact.format",
                    "the litert backend runs tflite artifacts; set artifact.format = \"tflite\"")
        rules.check(not rt.execution_providers, "runtime.execution_providers",
                    "execution_providers are for the onnxruntime backend")
        rules.check(rt.delegate != "edgetpu" or bool(rt.delegate_library), "runtime.delegate_library",
                    "the edgetpu delegate needs delegate_library", "e.g. delegate_library = \"libedgetpu.so.1\"")
        return
    rules.check(board.artifact.format == "onnx", "artifact.format",
                "the onnxruntime backend runs QDQ onnx artifacts; set artifact.format = \"onnx\"")
    rules.check(rt.delegate == "none", "runtime.delegate",
                "delegates are for the litert backend; use execution_providers")
    rules.check(bool(rt.execution_providers), "runtime.execution_providers",
                "the onnxruntime backend needs execution_providers", f"choose from {', '.join(PROVIDERS)}")
    for ep in rt.execution_providers:
        rules.check(ep in PROVIDERS, "runtime.execution_providers", f"unknown execution provider {ep!r}",
                    f"choose from {', '.join(PROVIDERS)}")
    rules.check("TensorrtExecutionProvider" not in rt.execution_providers or rt.engine_cache_dir.startswith("/"),
                "runtime.engine_cache_dir", "TensorRT needs an absolute engine_cache_dir",
                "building engines takes minutes; caching them is what makes a restart fast")
