"""Result sinks (MQTT results, JSONL file, stdout) and the router thread that feeds them.

The router writes each finished ``Result`` to every sink, updates the metrics, and then calls
the request's ``on_done`` (a watched-folder file moves to done/ or
failed/ only after its result is written -- so a crash in between replays the file, never loses
it). With only fast sinks (JSONL, stdout) results are routed inline, on the thread that got
them, saving a thread hand-off per request; when a sink may block (MQTT: the telemetry spool
writes synchronously to disk) results queue for the router thread, so a slow disk never stalls
a model worker. At shutdown ``drain`` writes whatever is left from the calling thread.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
from pathlib import Path

from core.errors import UsageError
from edge.daemon.messages import Result

log = logging.getLogger("ganglion.daemon")
BURST = 256          # results written per spool transaction at most


class JsonlSink:
    name = "jsonl"
    blocking = False

    def __init__(self, path: str, create: bool = True):
        self.path = Path(path)
        if not create:                         # --dry-run: check, write nothing
            check_creatable(self.path.parent, "the results file's folder", "usage.sink")
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered O_APPEND: one write() per record, so records of several writers (the
            # daemon and its worker processes' lanes, edge/daemon/lane.py) never interleave
            self._fh = open(self.path, "ab", buffering=0)
        except OSError as exc:
            raise UsageError(f"cannot open the results file: {exc}", where=str(self.path),
                             code="usage.sink") from exc

    def write(self, record: dict) -> None:
        self._fh.write((json.dumps(record, default=str) + "\n").encode())

    def close(self) -> None:
        self._fh.close()


class StdoutSink:
    name = "stdout"
    blocking = False

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class MqttSink:
    """Results as telemetry records: ``ganglion/v1/<device>/results/<model>``."""
    name = "mqtt"
    blocking = True

    def __init__(self, outbox, model_name: str):
        self.outbox, self.model_name = outbox, model_name

    def _name(self) -> str:
        return self.model_name() if callable(self.model_name) else self.model_name

    def write(self, record: dict) -> None:
        self.outbox.record("results", record, subtopic=self._name())

    def write_many(self, records: list[dict]) -> None:
        """One spool transaction (one fsync) for a burst of results, when the outbox can."""
        many = getattr(self.outbox, "record_many", None)
        if many is None:
            for record in records:
                self.write(record)
        else:
            many("results", records, subtopic=self._name())

    def close(self) -> None:
        pass


def check_creatable(folder: Path, what: str, code: str) -> None:
    """``folder`` exists as a folder, or could be made: its nearest existing parent is a writable
    folder. The check ``--dry-run`` makes instead of creating anything."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {what}: {probe} is not a writable folder", where=str(folder), code=code)


def make_sink(kind: str, *, path: str | None = None, outbox=None, model_name="model", dry_run: bool = False):
    """The sink registry: one line per kind."""
    if kind == "jsonl":
        if not path:
            raise UsageError("a jsonl sink needs a path", code="usage.sink")
        return JsonlSink(path, create=not dry_run)
    if kind == "stdout":
        return StdoutSink()
    if kind == "mqtt":
        if outbox is None:
            raise UsageError("an mqtt sink needs a broker (--broker or [telemetry] broker)", code="usage.sink")
        return MqttSink(outbox, model_name)
    raise UsageError(f"unknown sink kind {kind!r}", code="usage.sink", hint="use jsonl, stdout or mqtt")


class ResultRouter:
    def __init__(self, sinks: list, metrics, labels=lambda: None):
        self.sinks, self.metrics, self.labels = sinks, metrics, labels
        self.inline = not any(getattr(s, "blocking", True) for s in sinks)
        self.queue: queue.Queue[Result] = queue.Queue()
        self.answered = 0
        self._lock = threading.Lock()

    def deliver(self, result: Result) -> None:
        if self.inline:
            self._route(result)
        else:
            self.queue.put(result)

    def deliver_many(self, results: list[Result]) -> None:
        """A batch's results: routed together inline (one lock, one spool transaction), or queued."""
        if self.inline:
            self._route_many(results)
        else:
            for result in results:
                self.queue.put(result)

    def run(self, stop: threading.Event) -> None:
        """Thread child body: route results until stopped, in bursts of what is waiting."""
        while not stop.is_set():
            try:
                burst = [self.queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(burst) < BURST:
                try:
                    burst.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self._route_many(burst)

    def drain(self) -> None:
        while True:
            try:
                self._route(self.queue.get_nowait())
            except queue.Empty:
                return

    def _route(self, result: Result) -> None:
        self._route_many([result])

    def _route_many(self, results: list[Result]) -> None:
        with self._lock:           # drain() at shutdown may race the thread's last burst
            labels = self.labels() if self.sinks else None
            records = [r.to_record(labels) for r in results] if self.sinks else []
            for sink in self.sinks:
                try:
                    if len(records) > 1 and hasattr(sink, "write_many"):
                        sink.write_many(records)
                    else:
                        for record in records:
                            sink.write(record)
                except Exception as exc:     # a full disk must not kill the thread that answers
                    self.metrics.count("sink_errors")
                    log.warning("sink %s failed: %s", sink.name, exc)
            for result in results:
                self.metrics.observe(result.ok, result.latency_ms)
                self.answered += 1
                if result.request.on_done:
                    self._call_back(result)

    def _call_back(self, result: Result) -> None:
        # on_done runs on whichever thread answered: often a worker's dispatcher. A caller's bug
        # raising here would end that thread while its worker process lives on, so the worker
        # would silently serve nothing more (and the supervisor, watching the process, not notice).
        try:
            result.request.on_done(result)
        except Exception:
            self.metrics.count("callback_errors")
            log.exception("the on_done callback of request %s (%s) failed", result.request.id,
                          result.request.source)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
