"""The daemon's configuration: a frozen dataclass schema, loaded from TOML or built from flags.

    device_id = "cam1"            board = "rpi4"          watchdog_s = 0 (from systemd when 0)
    [model]      path, backend, threads, delegate, allow_cpu_fallback, providers, engine_cache_dir,
                 trusted_keys, dequantize
    [workers]    count, max_restarts, period_s, start_method, shutdown_s, request_timeout_s, isolation
    [supervisor] max_restarts, period_s            (the root: how often a subtree may be restarted)
    [batch]      max_batch, budget_ms, queue_size
    [metrics]    interval_s
    [firmware]   trusted_keys  (.pub files that sign firmware bundles: validation and OTA; distinct
                 from [model] trusted_keys, which sign model artifacts)
    [telemetry]  broker, ... (edge.telemetry.TelemetryConfig), plus spool (path of the SQLite spool)
    [[sources]]  kind = folder|replay|mqtt|camera, path, topic, rate_hz, loop, device, fps
    [[sinks]]    kind = jsonl|stdout|mqtt, path

Every key is checked: an unknown key (a typo), a wrong type or an out-of-range value raises one
``UsageError`` naming the dotted key, what was expected and what was found.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UsageError
from edge.telemetry.config import check_device_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""
    backend: str | None = None            # litert | onnxruntime; default from the board / file type
    threads: int | None = None
    delegate: str | None = None           # path of an external delegate library
    allow_cpu_fallback: bool = False
    providers: tuple[str, ...] = ()       # ONNX Runtime execution providers, in priority order
    engine_cache_dir: str | None = None
    trusted_keys: tuple[str, ...] = ()    # .pub files; when set, artifacts must be signed by one
    dequantize: bool = True               # int8 outputs -> float in results


@dataclass(frozen=True)
class FirmwareConfig:
    # Keys that sign firmware bundles (`ganglion firmware build --key`). Kept apart from the model's
    # artifact keys: a converter's signing key must not be able to authorise a firmware install.
    trusted_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 1
    max_restarts: int = 3
    period_s: float = 5.0
    start_method: str = "spawn"
    shutdown_s: float = 3.0
    request_timeout_s: float = 30.0       # a worker silent this long on one batch is killed (0: never)
    isolation: str = "process"            # process | thread (opt-in: no crash isolation, see docs)


@dataclass(frozen=True)
class SupervisorConfig:
    max_restarts: int = 2
    period_s: float = 30.0


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 8
    budget_ms: float = 0.0      # 0: greedy -- batch what is already queued, never wait for more
    queue_size: int = 64


@dataclass(frozen=True)
class MetricsConfig:
    interval_s: float = 10.0


@dataclass(frozen=True)
class SourceConfig:
    kind: str
    path: str | None = None
    topic: str | None = None
    rate_hz: float = 0.0
    loop: bool = False
    device: str = "0"
    fps: float = 0.0


@dataclass(frozen=True)
class SinkConfig:
    kind: str
    path: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    device_id: str = "ganglion"
    board: str | None = None
    watchdog_s: float = 0.0
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    firmware: FirmwareConfig = field(default_factory=FirmwareConfig)
    telemetry: dict = field(default_factory=dict)     # validated by edge.telemetry.TelemetryConfig
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()

    def check(self) -> "DaemonConfig":
        """Cross-field rules, after the types are right."""
        check_device_id(self.device_id)        # one topic level on every broker (telemetry/config.py)
        if not self.model.path:
            raise UsageError("no model given", where="model.path", code="usage.config",
                             hint="pass --model FILE or set [model] path in the config")
        # Bounds keep a command (config.set) from spinning the daemon: a 1e-9 s metrics interval
        # is a busy loop that floods the spool, not a setting.
        w, b = self.workers, self.batch
        rules = [(1 <= w.count <= 64, "workers.count", "1..64"),
                 (0 <= w.max_restarts <= 1000, "workers.max_restarts", "0..1000"),
                 (0.1 <= w.period_s <= 86400, "workers.period_s", "0.1..86400"),
                 (0.1 <= w.shutdown_s <= 600, "workers.shutdown_s", "0.1..600"),
                 (0 <= w.request_timeout_s <= 3600, "workers.request_timeout_s", "0..3600 (0: never)"),
                 (w.start_method in ("spawn", "forkserver", "fork"), "workers.start_method",
                  "spawn, forkserver or fork"),
                 (w.isolation in ("process", "thread"), "workers.isolation", "process or thread"),
                 (0 <= self.supervisor.max_restarts <= 1000, "supervisor.max_restarts", "0..1000"),
                 (0.1 <= self.supervisor.period_s <= 86400, "supervisor.period_s", "0.1..86400"),
                 (1 <= b.max_batch <= 1024, "batch.max_batch", "1..1024"),
                 (0 <= b.budget_ms <= 10_000, "batch.budget_ms", "0..10000"),
                 (1 <= b.queue_size <= 100_000, "batch.queue_size", "1..100000"),
                 (0.1 <= self.metrics.interval_s <= 86400, "metrics.interval_s", "0.1..86400"),
                 (0 <= self.watchdog_s <= 3600, "watchdog_s", "0..3600 (0: from systemd)")]
        rules += [(0 <= s.rate_hz <= 10_000 and 0 <= s.fps <= 1000, f"sources[{i}]",
                   "rate_hz 0..10000 and fps 0..1000") for i, s in enumerate(self.sources)]
        for ok, key, want in rules:
            if not ok:
                raise UsageError(f"{key} must be {want}", where=key, code="usage.config")
        kinds = {s.kind for s in self.sinks} | {s.kind for s in self.sources}
        if "mqtt" in kinds and not self.telemetry.get("broker"):
            raise UsageError("an mqtt source or sink needs a broker", where="telemetry.broker",
                             code="usage.config", hint="pass --broker mqtt://HOST:PORT")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_toml(path: str | Path) -> DaemonConfig:
    try:
        table = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config: {exc}", where=str(path), code="usage.config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config is not valid TOML: {exc}", where=str(path), code="usage.config") from exc
    base = Path(path).resolve().parent
    return from_dict(table, where=str(path), base=base)


def from_dict(table: dict, *, where: str = "config", base: Path | None = None) -> DaemonConfig:
    cfg = _build(DaemonConfig, table, "")
    return _resolve_paths(cfg, base) if base else cfg


def replace(cfg: DaemonConfig, dotted: str, value, _prefix: str = "") -> DaemonConfig:
    """``config set model.threads 4``: a new config with one key changed, type-checked."""
    head, _, rest = dotted.partition(".")
    names = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in names:
        raise UsageError(f"unknown config key {_prefix + dotted!r}", where=_prefix + dotted, code="usage.config",
                         hint=f"known: {', '.join(sorted(names))}")
    if rest and dataclasses.is_dataclass(getattr(cfg, head)):
        return dataclasses.replace(cfg, **{head: replace(getattr(cfg, head), rest, value, f"{_prefix}{head}.")})
    return dataclasses.replace(cfg, **{head: _coerce(names[head].type, value, _prefix + dotted, type(cfg))})


def _build(cls, table, prefix: str):
    if not isinstance(table, dict):
        raise UsageError(f"{prefix or 'config'} must be a table", where=prefix or "config", code="usage.config")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(prefix + k for k in unknown)}",
                         where=prefix.rstrip(".") or "config", code="usage.config",
                         hint=f"known: {', '.join(sorted(fields))}")
    values = {}
    for name, value in table.items():
        values[name] = _coerce(fields[name].type, value, prefix + name, cls)
    try:
        return cls(**values)
    except TypeError as exc:       # a required key is missing
        raise UsageError(f"{prefix.rstrip('.') or 'config'}: {exc}", code="usage.config") from exc


def _coerce(annotation, value, key: str, owner):
    hints = typing.get_type_hints(owner)
    tp = hints.get(key.rsplit(".", 1)[-1], annotation)
    return _as(tp, value, key)


def _as(tp, value, key: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _as(next(a for a in args if a is not type(None)), value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if isinstance(value, str) else _bad(key, "a list", value)
        return tuple(_as(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if tp is dict:
        return dict(value) if isinstance(value, dict) else _bad(key, "a table", value)
    if tp is bool:
        return value if isinstance(value, bool) else _bad(key, "true or false", value)
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _bad(key, "an integer", value)
    if tp is float:
        number = float(min(max(value, -1e308), 1e308)) if isinstance(value, int) else value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(number)
        return float(number) if ok else _bad(key, "a finite number", value)
    if tp is str:
        return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else _bad(
            key, "a string", value)
    return value


def _bad(key: str, want: str, got):
    raise UsageError(f"{key} must be {want}, got {got!r}", where=key, code="usage.config")


def _resolve_paths(cfg: DaemonConfig, base: Path) -> DaemonConfig:
    """Relative paths in a config file are relative to the file, not to the working directory."""
    def rel(p):
        return str(base / p) if p and not Path(p).is_absolute() else p
    model = dataclasses.replace(cfg.model, path=rel(cfg.model.path),
                                trusted_keys=tuple(rel(k) for k in cfg.model.trusted_keys))
    firmware = dataclasses.replace(cfg.firmware, trusted_keys=tuple(rel(k) for k in cfg.firmware.trusted_keys))
    sources = tuple(dataclasses.replace(s, path=rel(s.path)) for s in cfg.sources)
    sinks = tuple(dataclasses.replace(s, path=rel(s.path)) for s in cfg.sinks)
    return dataclasses.replace(cfg, model=model, firmware=firmware, sources=sources, sinks=sinks)
