"""The typed configuration: one schema library (pydantic v2) under every config Ganglion reads.

    Schema               the base model: unknown keys refused, strict types (no "4" for 4, no 1
                         for true), finite numbers, frozen; cross-field rules are model validators
                         that report through ``Rules`` (all of them, each naming its key)
    load(cls, table, file=, prefix=)   validate a TOML table; every problem -> one error
    read_toml(path, error)             TOML text -> table, unreadable / invalid TOML as ``error``
    closed sets          Backend, Delegate, Isolation, ... : each allowed set of values, once

Boards (``boards/schema.py``), the daemon (``edge/daemon/config.py``) and telemetry
(``edge/telemetry/config.py``) are ``Schema`` subclasses; ``firmware build`` validates a bundle's
``daemon.toml`` with the same ``DaemonConfig`` the device loads.

An invalid config raises the schema's error class (``UsageError`` "usage.config" unless a schema
says otherwise) with every problem found, the first one first: the file and dotted key in ``where``,
what was expected and what was found in the message, e.g.

    error[usage.config]: workers.count must be 1..64; got 0
      also: workers.start_method must be one of spawn, forkserver, fork; got 'bogus'
      also: unknown setting(s): telemetry.brokr
      where: bundle/config/daemon.toml: workers.count

Why pydantic and not msgspec (measured for issue 10, aarch64 cp311 wheels): msgspec is 0.23 MB
(0.62 MB installed) against pydantic's 2.7 MB (7.2 MB installed, with pydantic-core), but msgspec
stops at the first problem and reports neither the allowed values nor the value found; pydantic
reports every problem with its key path, kind, allowed set and input, which is what this module turns
into one readable error ("collect all problems before failing"). The price is start-up: importing
pydantic costs about 2.4x msgspec's import (``bench/config_libs.py``: +2.1 s against +0.9 s over a bare
interpreter's 0.23 s, on this loaded 2-core machine) -- paid by ``ganglion run`` and anything that
reads a config.
"""
from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from core.errors import GanglionError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the device may run 3.10
    import tomli as tomllib

# -- closed sets, defined once (the CLI's click.Choice lists read them too) ----------------------
Backend = Literal["litert", "onnxruntime"]
Architecture = Literal["aarch64", "armv7l", "x86_64"]
Delegate = Literal["none", "xnnpack", "edgetpu", "gpu"]
Provider = Literal["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
ArtifactFormat = Literal["tflite", "onnx"]
IoType = Literal["float32", "int8", "uint8"]
Isolation = Literal["process", "thread"]
StartMethod = Literal["spawn", "forkserver", "fork"]
SourceKind = Literal["folder", "replay", "mqtt", "camera"]
SinkKind = Literal["jsonl", "stdout", "mqtt"]
MqttVersion = Literal["auto", "5", "3.1.1"]
SpoolSync = Literal["full", "normal"]


def values(closed) -> tuple[str, ...]:
    """The allowed values of a closed set: ``values(Backend) == ("litert", "onnxruntime")``."""
    return typing.get_args(closed)


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def _one_or_many(value):
    return (value,) if isinstance(value, str) else _as_tuple(value)


Strings = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]          # a TOML list of strings
Paths = Annotated[tuple[str, ...], BeforeValidator(_one_or_many)]         # one path or a list of them


# -- cross-field rules ---------------------------------------------------------------------------
class Rules:
    """Collects the problems of one model's cross-field rules, then raises them together.

        rules = Rules()
        rules.check(self.a != self.b, "b", "slots.a and slots.b must differ")
        rules.done()          # in a ``@model_validator(mode="after")``, which returns self
    """

    def __init__(self) -> None:
        self.problems: list[dict] = []

    def check(self, ok: bool, key: str, message: str, hint: str | None = None, code: str | None = None) -> bool:
        if not ok:
            self.problems.append({"key": key, "message": message, "hint": hint, "code": code})
        return ok

    def done(self) -> None:
        if self.problems:
            raise PydanticCustomError("rules", "{count} rule(s) failed",
                                      {"count": len(self.problems), "problems": self.problems})


# -- the base model and its errors ---------------------------------------------------------------
class Schema(BaseModel):
    """Base of every config model. Subclasses may set ``error`` (class), ``codes`` (problem kind ->
    code: unknown_key, missing_key, bad_type, bad_value, rule) and ``section`` (the table's dotted
    name, for a model loaded on its own such as ``[telemetry]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    error: ClassVar[type[GanglionError]] = UsageError
    codes: ClassVar[dict[str, str]] = {}
    section: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **data: Any) -> None:
        """``TelemetryConfig(keepalive=1)`` raises the schema's error too, not pydantic's."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    # This __init__ only validates, as BaseModel's does: pydantic may validate nested tables without
    # calling it, so that one error reports every problem of the whole file (pydantic's own flag).
    __init__.__pydantic_base_init__ = True

    def to_dict(self) -> dict:
        return self.model_dump()


@dataclass
class Problem:
    key: str
    kind: str            # unknown_key | missing_key | bad_type | bad_value | rule
    message: str
    hint: str | None = None
    code: str | None = None


def load(cls: type[Schema], table: Any, *, file: str | None = None, prefix: tuple[str, ...] | None = None):
    """Validate ``table`` (a TOML table) as ``cls``; every problem -> one ``cls.error`` naming ``file``."""
    try:
        return cls.model_validate(table)
    except ValidationError as exc:
        raise config_error(cls, exc, file=file, prefix=prefix) from None


def read_toml(path: str | Path, error: type[GanglionError] = UsageError, code: str = "usage.config",
              toml_code: str | None = None) -> dict:
    """A TOML file as a table; an unreadable file or invalid TOML is ``error`` naming the file."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise error(f"cannot read config: {exc}", where=str(path), code=code) from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"config is not valid TOML: {exc}", where=str(path), code=toml_code or code,
                    hint="check quoting and brackets") from exc


def config_error(cls: type[Schema], exc: ValidationError, *, file: str | None = None,
                 prefix: tuple[str, ...] | None = None) -> GanglionError:
    """One error for every problem of ``exc``; the first names ``where``, code and hint."""
    prefix = cls.section if prefix is None else prefix
    found = [p for err in exc.errors() for p in _problems(cls, err, prefix)]
    found.sort(key=lambda p: p.kind != "unknown_key")     # a typo first: it explains a missing key
    first = found[0]
    message = "\n".join([first.message] + [f"  also: {p.message}" for p in found[1:]])
    where = f"{file}: {first.key}" if file else first.key
    code = first.code or cls.codes.get(first.kind, "usage.config")
    return cls.error(message, where=where, hint=first.hint, code=code)


def _dotted(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _problems(cls: type[Schema], err: dict, prefix: tuple) -> list[Problem]:
    loc = tuple(part for part in err["loc"] if not _is_tag(part))
    key, kind, found = _dotted(prefix + loc), err["type"], err.get("input")
    if kind == "rules":
        base = prefix + loc
        out = []
        for p in err["ctx"]["problems"]:
            full = _dotted(base + tuple(p["key"].split(".")))
            text = p["message"] if p["key"] in p["message"] else f"{full}: {p['message']}"
            out.append(Problem(full, "rule", text, p["hint"], p["code"]))
        return out
    if kind == "extra_forbidden":
        owner = _model_at(cls, loc[:-1])
        known = ", ".join(sorted(owner.model_fields)) if owner else None
        return [Problem(key, "unknown_key", f"unknown setting(s): {key}",
                        f"allowed here: {known}" if known else None)]
    if kind == "missing":
        field = _field_at(cls, loc)
        what = _describe(field.annotation) if field is not None else "a value"
        return [Problem(key, "missing_key", f"missing key {key} ({what})", f"add '{loc[-1]} = ...'")]
    if kind in ("literal_error", "enum"):
        allowed = _allowed(_field_at(cls, loc), err)
        return [Problem(key, "bad_value", f"{key} must be one of {allowed}; got {found!r}")]
    if kind in _BOUNDS:
        return [Problem(key, "bad_value", f"{key} must be {_bounds(cls, loc, err)}; got {found!r}")]
    if kind in ("value_error", "assertion_error"):
        return [Problem(key, "bad_value", f"{key}: {err['msg'].removeprefix('Value error, ')}")]
    field = _field_at(cls, loc)
    expected = _describe(field.annotation) if field is not None and len(loc) and not isinstance(loc[-1], int) \
        else _EXPECTED.get(kind, err["msg"].removeprefix("Input should be ").lower())
    return [Problem(key, "bad_type", f"{key} must be {expected}; got {type(found).__name__} {found!r}")]


_BOUNDS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
_EXPECTED = {"int_type": "an integer", "string_type": "a string", "bool_type": "true or false",
             "float_type": "a finite number", "finite_number": "a finite number", "tuple_type": "a list",
             "list_type": "a list", "model_type": "a table", "dict_type": "a table",
             "model_attributes_type": "a table"}


def _is_tag(part) -> bool:
    """pydantic adds the chosen type of a union to the location (``'function-before[...]'``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none", "tuple"))


def _inner(annotation):
    """Unwrap Annotated / Optional / tuple[X, ...] down to a model class or a plain type."""
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else annotation
            if len(rest) != 1:
                return annotation
        elif origin is tuple and args:
            annotation = args[0]
        else:
            return annotation


def _model_at(cls, loc) -> type[BaseModel] | None:
    model = cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        inner = _inner(field.annotation)
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return model


def _field_at(cls, loc):
    names = [p for p in loc if not isinstance(p, int)]
    if not names:
        return None
    owner = _model_at(cls, loc[:max(i for i, p in enumerate(loc) if not isinstance(p, int))])
    return owner.model_fields.get(names[-1]) if owner else None


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _describe(typing.get_args(annotation)[0])
    if origin is tuple:
        return "a list of strings" if _inner(annotation) is str else "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_describe(a) for a in rest)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table"
    return {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _allowed(field, err) -> str:
    args = ()
    if field is not None:
        inner = _inner(field.annotation)
        if typing.get_origin(inner) is Literal:
            args = typing.get_args(inner)
    return ", ".join(map(str, args)) if args else err.get("ctx", {}).get("expected", "?")


def _bounds(cls, loc, err) -> str:
    field = _field_at(cls, loc)
    lo = hi = None
    for meta in getattr(field, "metadata", ()):
        if isinstance(meta, (annotated_types.Ge, annotated_types.Gt)):
            lo = getattr(meta, "ge", None) if isinstance(meta, annotated_types.Ge) else meta.gt
        if isinstance(meta, (annotated_types.Le, annotated_types.Lt)):
            hi = getattr(meta, "le", None) if isinstance(meta, annotated_types.Le) else meta.lt
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"{lo}..{hi}"
    ctx = err.get("ctx", {})
    for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if name in ctx:
            return f"{sign} {ctx[name]}"
    return err["msg"]
