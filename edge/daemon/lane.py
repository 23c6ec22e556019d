"""Worker-owned lanes: a worker process reads a watched folder, runs the model and writes the results.

Why: on the parent's request path every input crosses the process boundary twice and wakes the
parent twice (pool.py); on a 2-core board that cost +0.45-0.54 ms on a 2.1 ms MobileNetV2 int8
inference (issue 10). In a lane the parent is off the data path: it supervises, nothing more.
The worker runs the watched folder's own code (``sources.FolderSource``) against ``LaneHost``,
which answers ``submit`` at once with the worker's backend, and writes the results to its own
file sinks (``sinks.ResultRouter``): the same rules, records and file moves as in the parent.

When: ``[workers] isolation = "process"``, a ``folder`` source, and only sinks a worker can write
without the parent (``jsonl``, ``stdout``: one ``write`` per record on an ``O_APPEND`` file, so
records of several writers never interleave). The MQTT sink (the telemetry spool) and the MQTT,
replay and camera sources stay on the parent's request path, as does ``Daemon.infer``.

Claims that survive a crash: a worker claims a file by renaming it into its own folder,
``processing/<worker>/``. When the supervisor starts that worker again after a crash, ``Lanes.recover``
looks there. A file claimed for the first time goes back to the inbox: its one retry, read again
by whichever worker comes first (alone: a lane runs batch 1). A file that had already been retried
is answered by the parent with ``runtime.worker_crash`` (sinks, then ``failed/`` with its
``.error.json``). Nothing is dropped. After a stop the daemon asked for (not a crash), claimed
files go back without using up their retry.

To the parent, a lane reports over a pipe of its own what telemetry needs: events
(``input_skipped``) and, at most every ``TALLY_S``, the latencies of what it answered. The slot's
dispatcher reads that pipe when it loops (at least every 0.2 s): no wake-up per input.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from edge.backends.base import check_feeds
from edge.daemon.decode import decode_payload, to_feeds
from edge.daemon.messages import Request, Result, error_dict
from edge.daemon.sinks import ResultRouter, make_sink
from edge.daemon.sources import FolderSource
from core.errors import GanglionError, InputError

LANE_SINKS = frozenset({"jsonl", "stdout"})
TALLY_S = 0.5
REMEMBERED = 10_000          # retried file names remembered (the oldest are forgotten)


def lane_folders(cfg) -> tuple[str, ...]:
    """The folder sources the workers read themselves under ``cfg`` (empty: no lanes)."""
    if cfg.workers.isolation != "process" or not all(s.kind in LANE_SINKS for s in cfg.sinks):
        return ()
    return tuple(s.path for s in cfg.sources if s.kind == "folder")


# -- in the worker process -------------------------------------------------------------------
class _Tally:
    """The router's metrics inside a worker: latencies and counts, sent to the parent in bursts."""

    def __init__(self, send):
        self.send, self.lat, self.counts = send, [], {}
        self._lock = threading.Lock()

    def observe(self, ok: bool, latency_ms: float) -> None:
        with self._lock:
            self.lat.append(round(latency_ms, 3) if ok else -1.0)     # -1: an error

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def flush(self) -> None:
        with self._lock:
            lat, counts, self.lat, self.counts = self.lat, self.counts, [], {}
        if lat or counts:
            self.send({"tally": lat, "counts": counts})

    def run(self, stop: threading.Event) -> None:
        """Flush every ``TALLY_S`` until stopped, then once more."""
        while not stop.wait(TALLY_S):
            self.flush()
        self.flush()


class LaneHost:
    """What ``FolderSource`` needs from a daemon, inside a worker: ``submit`` runs the model now."""

    def __init__(self, worker: str, run, info, sinks: list, send):
        self.worker, self.run, self.info, self.send = worker, run, info, send
        self.tally = _Tally(send)
        self.router = ResultRouter(sinks, self.tally, labels=lambda: info.labels)

    def submit(self, source: str, value, meta: dict | None = None, on_done=None, live: bool = False) -> None:
        req = Request(source, {}, dict(meta or {}), on_done)
        try:
            feeds = decode_payload(bytes(value), self.info) if isinstance(value, (bytes, bytearray)) \
                else to_feeds(value, self.info)
            req.feeds, _ = check_feeds(self.info.inputs, feeds)
        except GanglionError as exc:
            self.reject(source, exc, req.meta, on_done)
            return
        except Exception as exc:     # a decoder bug must still answer this input (as app.Daemon does)
            self.reject(source, InputError(f"unreadable input ({type(exc).__name__}: {exc})",
                                           code="input.unreadable"), req.meta, on_done)
            return
        outputs, error = self.run(req.feeds)
        self.router.deliver(Result(req, outputs=outputs, error=error, worker=self.worker,
                                   latency_ms=(time.monotonic() - req.created) * 1e3))

    def reject(self, source: str, err: GanglionError, meta: dict, on_done) -> None:
        self.router.deliver(Result(Request(source, {}, meta, on_done), error=err.to_dict(), worker=self.worker))

    def event(self, ev: dict) -> None:
        self.send({"event": {"ts": round(time.time(), 3), **ev}})


def start(worker: str, folders, sink_specs, run, info, conn, stop: threading.Event) -> list[threading.Thread]:
    """The lane threads of a worker process, one per folder; they end when ``stop`` is set."""
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            conn.send_bytes(json.dumps(msg).encode())
    sinks = [make_sink(kind, path=path) for kind, path in sink_specs]
    host = LaneHost(worker, run, info, sinks, send)
    threads = []
    for folder in folders:
        source = FolderSource(host, folder, claim=worker, recover=False)
        threads.append(threading.Thread(target=_read, args=(source, stop), name=f"lane-{folder}", daemon=True))
    threads.append(threading.Thread(target=host.tally.run, args=(stop,), name="lane-tally", daemon=True))
    for t in threads:
        t.start()
    return threads


def _read(source: FolderSource, stop: threading.Event) -> None:
    source.run(stop)
    _remove_if_empty(source.claimed)        # a stop leaves nothing claimed: no folder behind


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:         # not empty (a crash; recovered on restart) or gone
        pass


# -- in the parent ---------------------------------------------------------------------------
class Lanes:
    """The parent's side: what it needs to answer for a worker that died holding claims."""

    def __init__(self, daemon, folders):
        self.daemon, self.folders = daemon, tuple(folders)
        self.retried: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def recover(self, worker: str, crashed: bool) -> None:
        """Before ``worker`` starts again: what its last process had claimed goes back to the inbox
        for its one retry, or -- claimed on its retry already -- is answered with an error."""
        for folder in self.folders:
            claimed = Path(folder) / "processing" / worker
            try:
                names = sorted(os.listdir(claimed))
            except OSError:
                continue
            for name in names:
                self._recover_one(folder, claimed, name, worker, crashed)
            _remove_if_empty(claimed)

    def _recover_one(self, folder: str, claimed: Path, name: str, worker: str, crashed: bool) -> None:
        try:                # the inode: a rename keeps it, a new file of the same name has another
            key = (folder, name, os.lstat(claimed / name).st_ino)
        except OSError:
            return
        with self._lock:
            retried = key in self.retried
            if crashed and not retried:
                self.retried[key] = None
                while len(self.retried) > REMEMBERED:
                    self.retried.popitem(last=False)
        if crashed and retried:
            source = FolderSource(self.daemon, folder, claim=worker, recover=False)
            on_done = source.on_done_for(name)
            err = error_dict("runtime.worker_crash", f"the input crashed worker {worker} twice",
                             hint="the input may trigger a bug in the model's kernels")
            self.daemon.router.deliver(Result(Request(source.name, {}, {"file": name}, on_done), error=err,
                                              worker=worker, attempts=2))
            return
        if not (Path(folder) / name).exists():
            os.replace(claimed / name, Path(folder) / name)

    def report(self, msg: dict) -> None:
        """A message from a lane (see ``_Tally``, ``LaneHost.event``), on the parent."""
        if "event" in msg:
            self.daemon.event(msg["event"])
        for latency in msg.get("tally") or ():
            self.daemon.metrics.observe(latency >= 0, max(latency, 0.0))
        for key, n in (msg.get("counts") or {}).items():
            self.daemon.metrics.count(key, n)
