"""The daemon: owns the queues, the worker pool, the sinks and the telemetry handle; runs the tree.

Lifecycle: ``start()`` starts telemetry, then the supervision tree (``tree.build``), waits until a
worker has loaded the model (or reports why it could not), then says READY to systemd and
publishes status. ``run()`` blocks until a signal or until the root supervisor gives up, then
``shutdown()`` stops the tree (reverse order) and answers everything still queued with an error,
so no request is ever left without an answer.

``submit`` is the one entry point for sources: bytes/arrays -> validated feeds -> bounded queue.
Bad input is answered at once with an error result; the daemon carries on.
"""
from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

import boards
from core.errors import GanglionError, InputError, RuntimeBackendError
from edge.backends.base import check_feeds
from edge.daemon import lane, sdnotify, tree
from edge.daemon.batcher import Batcher, RequestQueue
from edge.daemon.broker_watch import broker_state, console
from edge.daemon.config import DaemonConfig
from edge.daemon.decode import decode_payload, frame_feeds, to_feeds
from edge.daemon.messages import Job, Request, Result, error_dict
from edge.daemon.metrics import Metrics
from edge.daemon.outbox import FanOut, LogOutbox
from edge.daemon.pool import WorkerPool, fatal_error
from edge.daemon.sinks import ResultRouter, make_sink
from edge.daemon.sources import make_source
from edge.daemon.spec import worker_spec

log = logging.getLogger("ganglion.daemon")
READY_TIMEOUT = 60.0


AUTO = "auto"      # Daemon(telemetry=AUTO): the MQTT client of cfg's [telemetry], if it names a broker


class Daemon:
    def __init__(self, cfg: DaemonConfig, *, telemetry=AUTO, firmware=None, outbox=None, log_stream=None,
                 factory: str | None = None, factory_args: dict | None = None, dry_run: bool = False):
        """Everything ``ganglion run`` has, wired by ``tree.wire``: with a broker in ``[telemetry]``
        the MQTT client (or the ``telemetry`` object given; None for none) with the daemon's commands
        on it; with ``firmware`` (``tree.boot_firmware``) the boot event, OTA, and the trial slot's
        validation once ready. ``dry_run``: build the tree to describe it; sources and sinks check
        their paths and create nothing (``ganglion run --dry-run``)."""
        if telemetry is AUTO:
            telemetry = None if dry_run else tree.make_telemetry(cfg)
        self.cfg, self.telemetry, self.firmware, self.dry_run = cfg, telemetry, firmware, dry_run
        self.outbox = outbox or FanOut(telemetry, LogOutbox(log_stream))
        self.recent_events: deque[dict] = deque(maxlen=100)
        self.stop_event = threading.Event()
        self.root_exit = None
        self.exit_code = 0                  # set by whoever asks for a restart (firmware OTA)
        self.started_at = time.monotonic()
        self.ready_s: float | None = None
        self.requests = RequestQueue(cfg.batch.queue_size, on_drop=lambda req: self.metrics.count("dropped"))
        self.metrics = Metrics(pids=lambda: self.pool.pids(), queue_depth=lambda: len(self.requests),
                               thermal_path=_thermal_path(cfg.board))
        sinks = [make_sink(s.kind, path=s.path, outbox=self.outbox, model_name=lambda: self.model_name,
                           dry_run=dry_run) for s in cfg.sinks]
        self.router = ResultRouter(sinks, self.metrics, labels=lambda: self.pool.info.labels if self.pool.info else None)
        folders = lane.lane_folders(cfg)          # watched folders the workers read themselves
        self.lanes = lane.Lanes(self, folders) if folders else None
        self.pool = WorkerPool(worker_spec(cfg, factory, factory_args), cfg.workers.count,
                               deliver=self.router.deliver, on_event=self.event,
                               start_method=cfg.workers.start_method,
                               request_timeout=cfg.workers.request_timeout_s,
                               isolation=cfg.workers.isolation, deliver_many=self.router.deliver_many,
                               lanes=self.lanes)
        self.batcher = Batcher(self.requests, max_batch=cfg.batch.max_batch, budget_ms=cfg.batch.budget_ms)
        self.pool.take, self.pool.take_ready = self.batcher.take, self.batcher.take_ready
        self.pool.backlog, self.pool.nudge = self.requests.__len__, self.requests.wake_all
        # a laned folder is made (and what a killed daemon left claimed put back) here, read there
        made = [(s, make_source(s.kind, self, path=s.path, topic=s.topic, telemetry=telemetry, rate_hz=s.rate_hz,
                                loop=s.loop, device=s.device, fps=s.fps, dry_run=dry_run)) for s in cfg.sources]
        self.lane_sources = [src for s, src in made if s.kind == "folder" and s.path in folders]
        self.sources = [src for _, src in made if src not in self.lane_sources]
        self.root, self.workers_sup = tree.wire(self)

    @property
    def model_name(self) -> str:
        """The manifest's name (stable across deploys of new versions), else the file's stem; made
        safe as one MQTT topic level, since results go to .../results/<model>."""
        info = getattr(getattr(self, "pool", None), "info", None)
        if info is not None:                   # remembered: during a reload there is no info
            self._name = (info.model_name or Path(self.cfg.model.path).stem)
        name = getattr(self, "_name", None) or Path(self.cfg.model.path).stem
        return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:64] or "model"

    # -- events --------------------------------------------------------------------------------
    def event(self, ev: dict) -> None:
        ev = {"ts": round(time.time(), 3), **ev}
        self.recent_events.append(ev)
        if ev.get("event") == "restart":
            self.metrics.count("restarts")
        elif ev.get("event") == "crash":
            self.metrics.count("crashes")
        self.outbox.record("events", ev)

    # -- requests ------------------------------------------------------------------------------
    def submit(self, source: str, value, meta: dict | None = None, on_done=None, live: bool = False) -> None:
        """Validate one input and queue it; bad input is answered with an error result at once."""
        req = self._request(source, value, meta, on_done, live)
        if req is not None:
            self._enqueue(req, live)

    def infer(self, value, meta: dict | None = None, *, source: str = "api", timeout: float | None = None) -> Result:
        """One input in, its ``Result`` out (the synchronous door, for code that embeds the daemon).

        With greedy batching (``budget_ms = 0``), an idle worker and nothing queued, the calling
        thread runs the round trip to the worker itself (``WorkerPool.run_direct``): the same
        answer, sinks and crash rules as ``submit``, minus two thread hand-offs. Otherwise the
        input is queued like any other. Never raises for a bad input: the result carries the error.
        Past ``timeout`` it raises ``runtime.timeout`` on either path; the answer, when it comes,
        still goes to the sinks (a direct caller leaves it to the worker's dispatcher)."""
        box: list[Result] = []
        done = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout

        def on_done(result: Result) -> None:
            box.append(result)
            done.set()
        req = self._request(source, value, meta, on_done, False)
        if req is not None:
            if self.cfg.batch.budget_ms == 0 and self.pool.run_direct(Job([req]), _left(deadline)):
                self.metrics.count("direct_runs")
            else:
                self._enqueue(req, False, deadline)
        if not done.wait(_left(deadline)):
            raise RuntimeBackendError(f"no answer within {timeout:g}s", code="runtime.timeout",
                                      hint="the request stays queued and is still answered through the sinks")
        return box[0]

    def _request(self, source: str, value, meta: dict | None, on_done, live: bool) -> Request | None:
        """A validated Request, or None when the input was refused (and answered) here."""
        meta = dict(meta or {})
        info = self.pool.info
        if info is None and not self.pool.ready.wait(READY_TIMEOUT):
            self.reject(source, RuntimeBackendError("no model worker is ready", code="runtime.unavailable"),
                        meta, on_done)
            return None
        info = self.pool.info
        try:
            feeds = self._feeds(value, info, live)
            feeds, _ = check_feeds(info.inputs, feeds)
        except GanglionError as exc:
            self.reject(source, exc, meta, on_done)
            return None
        except Exception as exc:     # a decoder bug must still answer this input, and not kill the source
            log.exception("could not read an input from %s", source)
            self.reject(source, InputError(f"unreadable input ({type(exc).__name__}: {exc})",
                                           code="input.unreadable"), meta, on_done)
            return None
        return Request(source, feeds, meta, on_done)

    def _enqueue(self, req: Request, live: bool, deadline: float | None = None) -> None:
        if live:
            self.requests.put_live(req)
            return
        # Block while the queue is full (backpressure), but notice a shutdown: a source blocked
        # here must not hold up the stop, and its input is answered "stopping" (kept for later).
        # An ``infer`` with a timeout waits for room no longer than that: then its input is
        # refused as "busy" (it was never queued, so nothing of it reaches the sinks later).
        while not self.requests.put(req, timeout=min(0.25, _left(deadline) or 0.25)):
            if self.stop_event.is_set() or self.requests.closed:
                self.reject(req.source, RuntimeBackendError("the daemon is stopping", code="runtime.stopping"),
                            req.meta, req.on_done)
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.reject(req.source, RuntimeBackendError(
                    "the request queue stayed full until the timeout", code="runtime.busy",
                    hint="the daemon is overloaded: add workers, raise batch.queue_size, or retry later"),
                    req.meta, req.on_done)
                return

    def _feeds(self, value, info, live: bool) -> dict[str, np.ndarray]:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return decode_payload(bytes(value), info)
        if live and isinstance(value, np.ndarray) and value.ndim == 3 and len(info.inputs) == 1:
            return frame_feeds(value, info)
        return to_feeds(value, info)

    def reject(self, source: str, err: GanglionError, meta: dict, on_done) -> None:
        self.router.deliver(Result(Request(source, {}, meta, on_done), error=err.to_dict()))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Daemon":
        if self.telemetry is not None:
            self.telemetry.start()
        self.root.monitor(self._on_root_exit)
        self.root.start()
        self._await_model()
        self.ready_s = time.monotonic() - self.started_at
        sdnotify.notify("READY=1\nSTATUS=model loaded")
        self.outbox.record("status", self.status())
        code = tree.on_ready(self)                # a firmware slot on trial proves itself here
        if code:
            self.exit_code = code
            self.stop_event.set()
        return self

    def _await_model(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.pool.ready.wait(0.05):
            err = fatal_error(self.pool)
            if err is not None or self.root_exit is not None or time.monotonic() > deadline:
                self.shutdown()
                raise err or RuntimeBackendError("no model worker became ready", code="runtime.unavailable",
                                                 hint="see the events above")

    def _on_root_exit(self, exit_) -> None:
        self.root_exit = exit_
        self.stop_event.set()

    def run(self, on_ready=None) -> int:
        """Block until SIGTERM/SIGINT or escalation at the root; returns the exit code.

        ``on_ready(daemon) -> int`` runs once the daemon has started (``ganglion run`` prints its
        start line); a non-zero result stops the daemon with that exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        if on_ready is not None:
            self.exit_code = on_ready(self) or self.exit_code
            if self.exit_code:
                self.stop_event.set()
        self.stop_event.wait()
        return self.shutdown()

    def shutdown(self) -> int:
        sdnotify.notify("STOPPING=1")
        if self.root_exit is None:
            self.root.stop(self.cfg.workers.shutdown_s)
        self.requests.close()
        reason = "the daemon is stopping" if self.root_exit is None else f"the daemon gave up: {self.root_exit.reason}"
        for req in self.requests.drain():
            self.router.deliver(Result(req, error=error_dict("runtime.unavailable", reason)))
        self.pool.jobs.close()              # first: a retry queued from now on is answered at once
        self.pool.fail_pending(reason)
        self.router.drain()
        self.router.close()
        self.report_metrics()
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.root_exit is not None:
            return RuntimeBackendError.exit_code
        return self.exit_code

    def stop(self) -> None:
        self.stop_event.set()

    def report_metrics(self) -> None:
        """One metrics record (every interval, and a last one at shutdown)."""
        info = self.pool.info
        self.outbox.record("metrics", {"model": self.model_name, "model_version": info.model_version if info else None,
                                       **self.metrics.snapshot()})

    def status(self) -> dict:
        info = self.pool.info
        doc = {"state": "online", "model": self.model_name, "model_version": info.model_version if info else None,
               "model_path": self.cfg.model.path,
               "backend": info.backend if info else None, "workers": self.cfg.workers.count,
               "worker_pids": self.pool.pids(), "ready_s": round(self.ready_s or 0, 3),
               "restarts": self.metrics.totals["restarts"], "board": self.cfg.board,
               "inputs": [s.to_dict() for s in info.inputs] if info else []}
        if self.telemetry is not None:       # url and state only: status is re-sent when it changes
            doc["broker"] = {k: v for k, v in broker_state(self).items() if k in ("url", "connected")}
        return doc

    def start_line(self) -> str:
        """The one readable line ``ganglion run`` prints once ready: what goes in, what comes out."""
        info = self.pool.info
        version = f" {info.model_version}" if info and info.model_version else ""
        ins = ", ".join(s.name for s in self.sources + self.lane_sources) or "no sources (commands and the API only)"
        outs = ", ".join(s.path or s.kind for s in self.cfg.sinks) or "no sinks"
        line = (f"ready in {self.ready_s or 0:.1f} s -- {ins} -> {outs}; model {self.model_name}{version} "
                f"({info.backend if info else '?'}, {self.cfg.workers.count} worker(s))")
        if self.telemetry is not None:
            b = broker_state(self)
            line += f"; broker {b['url']} as {self.cfg.device_id} ({'connected' if b['connected'] else 'not connected yet'})"
        return line


def _left(deadline: float | None) -> float | None:
    """Seconds until a monotonic ``deadline`` (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _thermal_path(board_name: str | None) -> str | None:
    if not board_name:
        return None
    try:
        sensors = boards.load(board_name).resources.thermal_sensors
    except (ImportError, GanglionError, AttributeError):
        return None
    return sensors[0] if sensors else None


def serve(cfg, firmware: tree.Firmware | None = None) -> int:
    """``ganglion run`` after its flags are parsed: the daemon of ``cfg`` until a signal or until the
    root gives up; the exit code. A trial slot whose daemon cannot even start is reverted here."""
    daemon = Daemon(cfg, firmware=firmware)
    try:
        return daemon.run(lambda d: console(d.start_line()))
    except GanglionError as exc:           # start-up failed (model, workers): not yet running
        if firmware is None or not tree.firmware_hook().fail_trial(firmware.root, firmware.slot, exc, cfg,
                                                            tree.make_telemetry):
            raise
        return tree.firmware_hook().EXIT_RESTART  # a trial slot that cannot start is reverted at once
