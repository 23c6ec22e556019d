"""The daemon's configuration: one frozen schema (``core.config.Schema``), loaded from TOML or built from flags.

    device_id = "cam1"            board = "rpi4"          watchdog_s = 0 (from systemd when 0)
    [model]      path, backend, threads, delegate, allow_cpu_fallback, providers, engine_cache_dir,
                 trusted_keys, dequantize
    [workers]    count, max_restarts, period_s, start_method, shutdown_s, request_timeout_s, isolation
    [supervisor] max_restarts, period_s            (the root: how often a subtree may be restarted)
    [batch]      max_batch, budget_ms, queue_size
    [metrics]    interval_s
    [firmware]   trusted_keys  (.pub files that sign firmware bundles: validation and OTA; distinct
                 from [model] trusted_keys, which sign model artifacts)
    [telemetry]  broker, ... (edge.telemetry.TelemetryConfig, typed), plus spool (path of the SQLite
                 spool); no broker: no telemetry
    [[sources]]  kind = folder|replay|mqtt|camera, path, topic, rate_hz, loop, device, fps
    [[sinks]]    kind = jsonl|stdout|mqtt, path

Every key is checked, and every rule between keys is part of the schema: an unknown key (a typo), a
wrong type, an out-of-range value or a broken rule (an mqtt sink without a broker) is reported, all
problems at once, in one ``UsageError`` naming the file, the dotted key, what was expected and what
was found. ``firmware build`` loads a bundle's ``daemon.toml`` with this same schema. The one thing
left to the caller is ``require_model()``: a firmware slot brings its own model, a plain run must
name one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from core.config import (Backend, Isolation, Paths, Rules, Schema, SinkKind, SourceKind, StartMethod, load,
                         read_toml)
from core.errors import UsageError
from edge.telemetry.config import TelemetryConfig, check_device_id


class ModelConfig(Schema):
    path: str = ""
    backend: Backend | None = None        # default from the board / file type
    threads: int | None = Field(None, ge=1, le=256)
    delegate: str | None = None           # path of an external delegate library
    allow_cpu_fallback: bool = False
    providers: Paths = ()                 # ONNX Runtime execution providers, in priority order
    engine_cache_dir: str | None = None
    trusted_keys: Paths = ()              # .pub files; when set, artifacts must be signed by one
    dequantize: bool = True               # int8 outputs -> float in results


class FirmwareConfig(Schema):
    # Keys that sign firmware bundles (`ganglion firmware build --key`). Kept apart from the model's
    # artifact keys: a converter's signing key must not be able to authorise a firmware install.
    trusted_keys: Paths = ()


# Bounds keep a command (config.set) from spinning the daemon: a 1e-9 s metrics interval is a busy
# loop that floods the spool, not a setting.
class WorkersConfig(Schema):
    count: int = Field(1, ge=1, le=64)
    max_restarts: int = Field(3, ge=0, le=1000)
    period_s: float = Field(5.0, ge=0.1, le=86400)
    start_method: StartMethod = "spawn"
    shutdown_s: float = Field(3.0, ge=0.1, le=600)
    # a worker silent this long on one batch is killed (0: never)
    request_timeout_s: float = Field(30.0, ge=0, le=3600)
    isolation: Isolation = "process"      # thread: opt-in, no crash isolation (docs/daemon.md)


class SupervisorConfig(Schema):
    max_restarts: int = Field(2, ge=0, le=1000)
    period_s: float = Field(30.0, ge=0.1, le=86400)


class BatchConfig(Schema):
    max_batch: int = Field(8, ge=1, le=1024)
    budget_ms: float = Field(0.0, ge=0, le=10_000)   # 0: greedy -- batch what is queued, never wait for more
    queue_size: int = Field(64, ge=1, le=100_000)


class MetricsConfig(Schema):
    interval_s: float = Field(10.0, ge=0.1, le=86400)


def _device_text(value):
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value   # camera = 0


class SourceConfig(Schema):
    kind: SourceKind
    path: str | None = None
    topic: str | None = None
    rate_hz: float = Field(0.0, ge=0, le=10_000)
    loop: bool = False
    device: Annotated[str, BeforeValidator(_device_text)] = "0"
    fps: float = Field(0.0, ge=0, le=1000)


class SinkConfig(Schema):
    kind: SinkKind
    path: str | None = None


class DaemonTelemetry(TelemetryConfig):
    """``[telemetry]`` as the daemon reads it: no broker means no telemetry; plus the spool's path."""
    broker: str | None = None
    spool: str | None = None

    def client_config(self) -> TelemetryConfig:
        """The ``TelemetryConfig`` the MQTT client takes (without the daemon's own keys)."""
        return TelemetryConfig(**self.model_dump(exclude={"spool"}, exclude_unset=True))


class DaemonConfig(Schema):
    model: ModelConfig = ModelConfig()
    device_id: str = "ganglion"
    board: str | None = None
    watchdog_s: float = Field(0.0, ge=0, le=3600)     # 0: from systemd
    workers: WorkersConfig = WorkersConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    batch: BatchConfig = BatchConfig()
    metrics: MetricsConfig = MetricsConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    telemetry: DaemonTelemetry = DaemonTelemetry()
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, table):
        """TOML arrays of tables arrive as lists; the schema keeps tuples (frozen)."""
        if isinstance(table, dict):
            table = {k: tuple(v) if k in ("sources", "sinks") and isinstance(v, list) else v
                     for k, v in table.items()}
        return table

    @model_validator(mode="after")
    def _rules(self):
        rules = Rules()
        try:
            check_device_id(self.device_id)      # one topic level on every broker (telemetry/config.py)
        except UsageError as exc:
            rules.check(False, "device_id", exc.message, exc.hint, code=exc.code)
        kinds = {s.kind for s in self.sinks} | {s.kind for s in self.sources}
        rules.check("mqtt" not in kinds or bool(self.telemetry.broker), "telemetry.broker",
                    "an mqtt source or sink needs a broker", "pass --broker mqtt://HOST:PORT")
        rules.done()
        return self

    def require_model(self) -> "DaemonConfig":
        """A plain run must name its model (a firmware slot brings its own)."""
        if not self.model.path:
            raise UsageError("no model given", where="model.path", code="usage.config",
                             hint="pass --model FILE or set [model] path in the config")
        return self


def load_toml(path: str | Path) -> DaemonConfig:
    """Read and validate a daemon TOML; relative paths in it are relative to the file."""
    table = read_toml(path)
    return from_dict(table, where=str(path), base=Path(path).resolve().parent)


def from_dict(table: dict, *, where: str | None = None, base: Path | None = None) -> DaemonConfig:
    """Validate a table; ``where`` (the file) is named in errors, ``base`` resolves relative paths."""
    cfg = load(DaemonConfig, table, file=where)
    return _resolve_paths(cfg, base) if base else cfg


def replace(cfg: DaemonConfig, dotted: str, value) -> DaemonConfig:
    """``config set model.threads 4``: a new config with one key changed, through the same schema."""
    table = cfg.model_dump(exclude_defaults=True)
    *parents, leaf = dotted.split(".")
    node = table
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise UsageError(f"{dotted!r} is not a table key", where=dotted, code="usage.config")
    node[leaf] = value
    return load(DaemonConfig, table)


def _resolve_paths(cfg: DaemonConfig, base: Path) -> DaemonConfig:
    """Relative paths in a config file are relative to the file, not to the working directory."""
    def rel(p):
        return str(base / p) if p and not Path(p).is_absolute() else p
    model = cfg.model.model_copy(update={"path": rel(cfg.model.path),
                                         "trusted_keys": tuple(rel(k) for k in cfg.model.trusted_keys)})
    firmware = cfg.firmware.model_copy(update={"trusted_keys": tuple(rel(k) for k in cfg.firmware.trusted_keys)})
    sources = tuple(s.model_copy(update={"path": rel(s.path)}) for s in cfg.sources)
    sinks = tuple(s.model_copy(update={"path": rel(s.path)}) for s in cfg.sinks)
    return cfg.model_copy(update={"model": model, "firmware": firmware, "sources": sources, "sinks": sinks})
