"""The supervision tree of ``ganglion run`` -- wired here and nowhere else.

    root (rest_for_one)
    ├── results      thread   writes results to blocking sinks (MQTT), then tells the source
    │                         (file -> done/); with only fast sinks results are routed inline
    ├── workers      supervisor (one_for_one, intensity from [workers])
    │   └── worker-N process  one model backend each (its dispatcher thread takes micro-batches
    │                         from the request queue when the worker is free); a crash costs one restart.
    │                         With file sinks only, it reads the watched folders itself (lane.py):
    │                         the parent is then off that data path
    ├── sources      supervisor (one_for_one): folder / mqtt / replay (transient) / camera threads
    ├── metrics      thread   a metrics record every [metrics] interval_s
    ├── broker       thread   broker connection changes as events + console lines (with telemetry)
    └── watchdog     thread   WATCHDOG=1 to systemd while the tree is alive (only under systemd)

Why rest_for_one at the root: everything after a child depends on it. If the workers'
supervisor gives up and is restarted, the sources restart after it; the results
writer, first in the list, keeps running and never loses an answer. If the root itself exceeds
its intensity, the daemon exits non-zero and systemd (Restart=on-failure) takes over.
Telemetry is outside the tree: it is started before it and stopped after it, so the last
events (including the root's own escalation) are spooled and published.

Everything around the tree is wired here too, so that ``Daemon(cfg)`` embedded in a Python
program gets what ``ganglion run`` gets: ``make_telemetry`` (the MQTT client of ``[telemetry]``),
``wire`` (the tree, the command handlers, the firmware OTA hook and boot event), ``on_ready``
(a trial slot's validation once the model is loaded). ``ganglion run`` only parses flags into
the config, calls ``boot_firmware`` when it runs from a firmware root, and then ``app.serve``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import GanglionError, UsageError
from edge.daemon import broker_watch, commands, sdnotify
from edge.supervisor import ChildSpec, Restart, Strategy, Supervisor, ThreadChild


# The firmware integration lives on the layer above (firmware sits above the runtime, edge never
# imports it): ``firmware.daemon_hook`` plugs itself in here when it is imported, and ``ganglion
# run`` is listed as ``firmware.daemon_hook:run`` in edge/cli.py. Without it, --firmware-root is
# refused and everything else works.
FIRMWARE_HOOK = None


def firmware_hook():
    if FIRMWARE_HOOK is None:
        raise UsageError("--firmware-root needs the firmware package", code="usage.firmware",
                         hint="run the daemon through the ganglion command (ganglion run --firmware-root ROOT)")
    return FIRMWARE_HOOK


@dataclass(frozen=True)
class Firmware:
    """The A/B slot this daemon booted (``firmware.boot``): its root and the boot record."""
    root: str
    slot: dict

    def defaults(self) -> tuple[str | None, str | None]:
        """(model path, config path) that the slot brings; flags and ``--config`` win."""
        return firmware_hook().slot_defaults(self.slot)


def boot_firmware(root: str | None) -> Firmware | None:
    """Pick the slot to run under ``root`` (counting trial boots, reverting a failed slot) and put
    its wheels first on the import path; None when there is no root or nothing is installed."""
    if not root:
        return None
    slot = firmware_hook().boot(root)
    if slot is None:
        return None
    firmware_hook().use_site(slot)
    return Firmware(root, slot)


def make_telemetry(cfg):
    """The real MQTT client when a broker is configured, else None."""
    if not cfg.telemetry.broker:
        return None
    from edge.telemetry import Telemetry   # optional: paho loads only with a broker configured
    spool = cfg.telemetry.spool or default_spool(cfg.device_id)
    try:
        Path(spool).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the spool folder: {exc}", where=str(spool), code="usage.spool",
                         hint="pass --spool PATH somewhere writable") from exc
    return Telemetry(cfg.telemetry.client_config(), cfg.device_id, spool)


def default_spool(device_id: str) -> str:
    root = "/var/lib/ganglion" if os.geteuid() == 0 else os.path.expanduser("~/.local/state/ganglion")
    return os.path.join(root, device_id, "spool.db")


def wire(daemon) -> tuple[Supervisor, Supervisor]:
    """The tree (``build``) plus the hooks on telemetry: commands, and with firmware the boot
    event and OTA. Called once by ``Daemon.__init__``."""
    root, workers = build(daemon)
    if daemon.dry_run:
        return root, workers
    telemetry, fw = daemon.telemetry, daemon.firmware
    if telemetry is not None:
        commands.register(daemon, telemetry)
    if fw is not None:
        daemon.event({"event": "firmware", "phase": "boot",
                      **{k: fw.slot.get(k) for k in ("slot", "version", "action", "status")}})
        if telemetry is not None:
            firmware_hook().register_ota(daemon, telemetry, fw.root)
    return root, workers


def on_ready(daemon) -> int:
    """Runs once the model is loaded: a slot on trial is validated (non-zero: stop with it)."""
    fw = daemon.firmware
    return firmware_hook().validate_trial(daemon, fw.root, fw.slot) if fw is not None else 0


def build(daemon) -> tuple[Supervisor, Supervisor]:
    cfg = daemon.cfg
    wcfg = cfg.workers
    batching = f"batches of <= {cfg.batch.max_batch} within {cfg.batch.budget_ms:g} ms, queue {cfg.batch.queue_size}"
    workers = Supervisor("workers", [
        ChildSpec(slot.name, slot.start, shutdown=wcfg.shutdown_s,
                  kind="process" if wcfg.isolation == "process" else "thread",
                  note=f"{cfg.model.path} on {cfg.model.backend or 'auto'}; {batching}"
                  + ("" if wcfg.isolation == "process" else "; in the daemon's process: no crash isolation")
                  + "".join(f"; reads {s.name} and writes its results itself" for s in daemon.lane_sources))
        for slot in daemon.pool.slots],
        strategy=Strategy.ONE_FOR_ONE, max_restarts=wcfg.max_restarts, period=wcfg.period_s,
        on_event=daemon.event)
    children = [
        _thread("results", daemon.router.run, f"sinks: {', '.join(s.kind for s in cfg.sinks) or 'none'}"
                + ("" if not daemon.router.inline else " (routed inline; this thread idles)")),
        ChildSpec("workers", workers.start, kind="supervisor", describe=workers.describe,
                  shutdown=wcfg.shutdown_s * 2),
    ]
    if daemon.sources:
        sources = Supervisor("sources", [
            _thread(src.name, src.run, "", Restart.TRANSIENT if src.kind == "replay" else Restart.PERMANENT)
            for src in daemon.sources], strategy=Strategy.ONE_FOR_ONE, max_restarts=5, period=10.0,
            on_event=daemon.event)
        children.append(ChildSpec("sources", sources.start, kind="supervisor", describe=sources.describe))
    children.append(_thread("metrics", lambda stop: _report_metrics(daemon, stop),
                            f"every {cfg.metrics.interval_s:g} s"))
    if daemon.telemetry is not None or (daemon.dry_run and cfg.telemetry.broker):
        children.append(_thread("broker", lambda stop: broker_watch.watch(daemon, stop),
                                f"connection changes as events; a warning after {broker_watch.WARN_AFTER_S:g} s "
                                "without one"))
    interval = sdnotify.watchdog_interval() or (cfg.watchdog_s / 2 if cfg.watchdog_s else None)
    if interval:
        children.append(_thread("watchdog", lambda stop: _watchdog(stop, interval), f"every {interval:g} s"))
    root = Supervisor("root", children, strategy=Strategy.REST_FOR_ONE, max_restarts=cfg.supervisor.max_restarts,
                      period=cfg.supervisor.period_s, on_event=daemon.event)
    return root, workers


def describe(daemon) -> str:
    """The text ``ganglion run --dry-run`` prints."""
    tel = daemon.cfg.telemetry.broker
    head = [f"telemetry: {tel} as {daemon.cfg.device_id} (started before the tree, stopped after it)"
            if tel else "telemetry: off (events and metrics go to stderr as JSON lines)"]
    return "\n".join(head + daemon.root.describe())


def _thread(name: str, body, note: str, restart: Restart = Restart.PERMANENT) -> ChildSpec:
    return ChildSpec(name, lambda: ThreadChild(body, name), restart=restart, shutdown=2.0, kind="thread", note=note)


def _report_metrics(daemon, stop) -> None:
    """Metrics every interval; the retained status document too, when it changed (restarts, pids)."""
    last = None
    while not stop.wait(daemon.cfg.metrics.interval_s):
        daemon.report_metrics()
        status = daemon.status()
        if status != last and daemon.pool.info is not None:
            daemon.outbox.record("status", status)
            last = status


def _watchdog(stop, interval: float) -> None:
    while not stop.wait(interval):
        sdnotify.notify("WATCHDOG=1")
