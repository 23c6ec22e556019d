"""Daemon command handlers on the telemetry command channel: reload, config.get/set, deploy.

``ping`` and ``status`` are answered by the telemetry layer itself (the daemon keeps the retained
status document current). Each handler takes the command's args and returns a reply dict, or
raises a ``GanglionError`` that the telemetry layer turns into an error reply.

    reload       {"model": path?}            load the model (or a new one) into fresh workers
    config.get   {"key": "batch.max_batch"?} one value, or the whole config
    config.set   {"key": ..., "value": ...}  batch.* and metrics.* apply at once; others on reload
    deploy       chunked transfer (deploy.begin/.chunk/.commit); on commit the artifact is verified
                 (hashes; signature when trusted keys are configured), stored, and reloaded; with
                 {"shadow": N} the candidate first runs beside the current model (shadow.py) and,
                 below {"min_agreement": x}, is stored but not switched to
    shadow       {"model", "inputs", "timeout_s"}: candidate vs current on live inputs (shadow.py)

The status document carries ``model_sha256`` (of the model file) so the fleet hub can tell which
artifact runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from core import artifact as gpk
from core import keys
from core.errors import InputError, UsageError
from edge.daemon import config as cfgmod
from edge.daemon import shadow as shadow_mod
from edge.daemon.camera import redact
from edge.daemon.probe import probe
from edge.daemon.spec import worker_spec

LIVE_KEYS = ("batch.max_batch", "batch.budget_ms", "metrics.interval_s")


def register(daemon, telemetry) -> None:
    telemetry.register_command("reload", lambda args: reload(daemon, args))
    telemetry.register_command("config.get", lambda args: config_get(daemon, args))
    telemetry.register_command("config.set", lambda args: config_set(daemon, args))
    telemetry.register_transfer("deploy", lambda path, info, args: deploy(daemon, path, info, args))
    telemetry.register_command("shadow", lambda args: shadow_mod.shadow(daemon, args))
    telemetry.record("status", {"model_sha256": file_sha256(daemon.cfg.model.path)})


def reload(daemon, args: dict) -> dict:
    model = args.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError("'model' must be a path string", code="command.args")
    return daemon_reload(daemon, model)


def daemon_reload(daemon, model: str | None) -> dict:
    """Probe the model in a throwaway worker first; only then swap it in (the old one stays on error)."""
    cfg = daemon.cfg
    if model:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": model})})
    spec = dataclasses.replace(worker_spec(cfg), factory=daemon.pool.spec.factory,
                               factory_args=daemon.pool.spec.factory_args)
    info = probe(spec, daemon.pool.ctx)
    daemon.cfg = cfg
    daemon.pool.spec = spec
    daemon.pool.info = None
    daemon.pool.ready.clear()
    daemon.workers_sup.stop(cfg.workers.shutdown_s)
    daemon.workers_sup.start()
    if not daemon.pool.ready.wait(60):
        raise InputError("the reloaded model did not become ready", code="runtime.reload")
    daemon.event({"event": "reload", "model": cfg.model.path})
    daemon.outbox.record("status", {**daemon.status(), "model_sha256": file_sha256(cfg.model.path)})
    return {"reloaded": True, "model": cfg.model.path, "backend": info.get("backend")}


def config_get(daemon, args: dict) -> dict:
    data = daemon.cfg.to_dict()
    data.get("telemetry", {}).pop("password", None)
    for source in data.get("sources") or []:       # rtsp://user:password@... stays on the device
        if source.get("device") is not None:
            source["device"] = redact(source["device"])
    key = args.get("key")
    if key is None:
        return {"config": data}
    value = data
    for part in str(key).split("."):
        if not isinstance(value, dict) or part not in value:
            raise UsageError(f"unknown config key {key!r}", code="command.args")
        value = value[part]
    return {"key": key, "value": value}


def config_set(daemon, args: dict) -> dict:
    key, value = args.get("key"), args.get("value")
    if not isinstance(key, str) or "value" not in args:
        raise UsageError("config.set needs 'key' and 'value'", code="command.args")
    if key.startswith(("telemetry", "sources", "sinks")):
        raise UsageError(f"{key} cannot be changed at run time", code="command.args",
                         hint="edit the config file and restart the daemon")
    new = cfgmod.replace(daemon.cfg, key, value).require_model()
    daemon.cfg = new
    live = key in LIVE_KEYS
    if key == "batch.max_batch":
        daemon.batcher.max_batch = new.batch.max_batch
    elif key == "batch.budget_ms":
        daemon.batcher.budget = new.batch.budget_ms / 1e3
    return {"key": key, "value": value, "applied": "now" if live else "on reload"}


def deploy(daemon, path: Path, info: dict, args: dict) -> dict:
    """A transferred artifact: verify, keep it beside the current model, reload onto it."""
    trusted = None
    if daemon.cfg.model.trusted_keys:
        trusted = keys.load_publics(daemon.cfg.model.trusted_keys)
    art = gpk.read(str(path), trusted_keys=trusted)          # raises ArtifactError / SignatureError
    data = Path(path).read_bytes()
    digest = gpk.sha256(data)
    folder = Path(daemon.cfg.model.path).resolve().parent / "deployed"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{art.manifest.get('name', 'model')}-{digest[:12]}.gpk"
    gpk.atomic_write(target, data)
    previous = daemon.cfg.model.path
    report = None
    if args.get("shadow"):
        report = shadow_mod.shadow(daemon, {"model": str(target), "inputs": args["shadow"],
                                            "timeout_s": args.get("shadow_timeout_s", 30.0)})
        if report["top1_agreement"] < args.get("min_agreement", 0.0):
            return {"switched": False, "deployed": str(target), "sha256": digest, "previous": previous,
                    "shadow": report}
    result = daemon_reload(daemon, str(target))
    daemon.event({"event": "deploy", "model": str(target), "previous": previous, "sha256": digest})
    return {**result, "deployed": str(target), "sha256": digest, "previous": previous, "shadow": report}


def file_sha256(path: str) -> str | None:
    """The model file's sha256 (streamed), None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
