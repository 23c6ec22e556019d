"""Input sources: a watched folder, an MQTT topic, a replay file, a camera. Each is a thread child.

A source turns what it sees into ``submit(source, value, meta, on_done)`` calls on the daemon
(``Daemon.submit``); the daemon validates, queues and answers. File and MQTT sources block when
the queue is full (backpressure; they never drop); the camera drops the oldest frame instead.
The MQTT source blocks on its own thread, never on paho's (see ``MqttSource``).

Watched folder: a file is claimed by renaming it into ``path/processing/`` (atomic: it is
answered exactly once, even when a directory scan is stale), read without following symlinks,
and after its result is written it moves to ``path/done/`` or, with a ``.error.json`` beside it,
to ``path/failed/``. Symlinks and other non-regular files are answered with an error and moved
to ``failed/`` (the link itself, never its target). A file the daemon could not answer because it
was stopping goes back to ``path`` and is read again on the next start; files a killed daemon left
in ``processing/`` go back at start-up. Names that start with '.' or end in ``.tmp``/``.part``
are ignored, so writers can copy-then-rename; other unknown suffixes (``notes.txt``) are left
where they are and reported once as an ``input_skipped`` event.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections import deque
from pathlib import Path

import numpy as np

from core.errors import GanglionError, InputError, UsageError
from edge import npyfile, preprocess
from edge.daemon.camera import CameraSource
from edge.daemon.decode import MAX_PAYLOAD
from edge.daemon.sinks import check_creatable

log = logging.getLogger("ganglion.daemon")

# Errors that say "the daemon could not answer now", not "this input is bad".
RETRY_LATER = frozenset({"runtime.unavailable", "runtime.stopping"})
FOLDER_SUFFIXES = {".npy", ".npz", ".png", ".jpg", ".jpeg", ".json", ".bin", ".raw"}


class FolderSource:
    kind = "folder"
    SUBDIRS = ("done", "failed", "processing")

    def __init__(self, daemon, path: str, poll_s: float = 0.1, create: bool = True, claim: str | None = None,
                 recover: bool = True):
        """``claim``: a subfolder of ``processing/`` of its own (a worker process reading this folder
        itself, edge/daemon/lane.py); ``recover``: put back what a killed daemon left claimed."""
        self.daemon, self.path, self.poll_s = daemon, Path(path), poll_s
        self.name = f"folder:{self.path}"
        self.claimed = self.path / "processing" / (claim or "")
        self._inflight: set[str] = set()
        self._skipped: set[str] = set()
        self._lock = threading.Lock()
        if not create:                         # --dry-run: check, write nothing
            check_creatable(self.path, "the watched folder", "usage.source")
            return
        try:
            for sub in ("", *self.SUBDIRS):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self.claimed.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use the watched folder: {exc}", where=str(self.path),
                             code="usage.source") from exc
        if recover:
            self._recover(self.path / "processing")

    def _recover(self, claimed: Path) -> None:
        """Files a killed daemon had claimed but not answered go back to the inbox (also from the
        worker processes' own claim folders, ``processing/worker-N/``)."""
        for entry in os.scandir(claimed):
            if entry.is_dir(follow_symlinks=False):
                self._recover(Path(entry.path))
            elif not (self.path / entry.name).exists():
                os.replace(entry.path, self.path / entry.name)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for name in sorted(os.listdir(self.path)):
                if stop.is_set():
                    return
                self._consider(name)
            stop.wait(self.poll_s)

    def _consider(self, name: str) -> None:
        if name.startswith(".") or name.endswith((".tmp", ".part")) or name in self.SUBDIRS:
            return
        try:
            st = os.lstat(self.path / name)
        except OSError:
            return                                 # gone already (another reader, the writer)
        if stat.S_ISDIR(st.st_mode):
            return
        if Path(name).suffix.lower() not in FOLDER_SUFFIXES:
            self._skip(name)
            return
        with self._lock:
            if name in self._inflight:             # one with this name is still being answered
                return
            self._inflight.add(name)
        try:
            os.rename(self.path / name, self.claimed / name)      # the claim: atomic, once
        except OSError:
            with self._lock:
                self._inflight.discard(name)
            return
        self._submit(name, st)

    def _skip(self, name: str) -> None:
        if name in self._skipped or len(self._skipped) > 10_000:
            return
        self._skipped.add(name)
        self.daemon.event({"event": "input_skipped", "source": self.name, "file": name,
                           "reason": f"not an input type (takes {', '.join(sorted(FOLDER_SUFFIXES))})"})

    def _submit(self, name: str, st: os.stat_result) -> None:
        meta = {"file": name}
        on_done = self.on_done_for(name)
        try:
            data = self._read(name, st)
        except InputError as exc:
            self.daemon.reject(self.name, exc, meta, on_done)
            return
        except Exception as exc:       # anything about this one file: answer it, never kill the source
            self.daemon.reject(self.name, InputError(f"cannot read {name}: {type(exc).__name__}: {exc}",
                                                     code="input.file"), meta, on_done)
            return
        self.daemon.submit(self.name, data, meta, on_done)

    def _read(self, name: str, st: os.stat_result) -> bytes:
        if stat.S_ISLNK(st.st_mode):
            raise InputError(f"{name} is a symbolic link; links are not followed", code="input.symlink",
                             hint="copy the file into the folder instead")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{name} is not a regular file", code="input.not_regular")
        fd = os.open(self.claimed / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"{name} is not a regular file", code="input.not_regular")
            data = fh.read(MAX_PAYLOAD + 1)        # never read a huge file into memory
        if len(data) > MAX_PAYLOAD:
            raise InputError(f"{name} is larger than {MAX_PAYLOAD} bytes", code="input.too_large")
        suffix = Path(name).suffix.lower()
        magic = {".npy": (preprocess.NPY_MAGIC, "input.npy"), ".npz": (npyfile.ZIP_MAGIC, "input.npz")}
        if suffix in magic and not data.startswith(magic[suffix][0]):     # not raw bytes by accident
            raise InputError(f"{name} is not a readable {suffix} file", code=magic[suffix][1])
        return data

    def on_done_for(self, name: str):
        """The ``on_done`` of claimed file ``name``: moves it to done/ or failed/ (or back, to retry)."""
        claimed = self.claimed / name

        def on_done(result) -> None:
            try:
                if not result.ok and result.error.get("code") in RETRY_LATER:
                    if not (self.path / name).exists():    # not the file's fault: keep it for the next start
                        os.replace(claimed, self.path / name)
                    return
                folder = self.path / ("done" if result.ok else "failed")
                os.replace(claimed, folder / name)
                if not result.ok:
                    (folder / error_file_name(name)).write_text(json.dumps({**result.error, "file": name}))
            except OSError as exc:        # the result is written already; say why the file stayed
                log.warning("watched folder: could not move %s: %s", name, exc)
            finally:
                with self._lock:
                    self._inflight.discard(name)
        return on_done


def error_file_name(name: str) -> str:
    """``NAME.error.json``, or a shortened name with a hash of the full one where that would pass
    the file system's 255-byte limit (the full name is inside the file)."""
    full = f"{name}.error.json"
    if len(os.fsencode(full)) <= 255:
        return full
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    short = name
    while len(os.fsencode(short)) > 150:
        short = short[:-1]
    return f"{short}~{digest}.error.json"


class ReplaySource:
    """Replays a .npy (samples on axis 0) or .npz (one array per input) file, optionally at a rate."""
    kind = "replay"

    def __init__(self, daemon, path: str, rate_hz: float = 0.0, loop: bool = False):
        self.daemon, self.path, self.rate, self.loop = daemon, Path(path), rate_hz, loop
        self.name = f"replay:{self.path.name}"

    def _samples(self) -> list:
        try:
            data = np.load(self.path, allow_pickle=False)
            if isinstance(data, np.ndarray):
                return [data[i:i + 1] for i in range(len(data))]
            with data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, TypeError, MemoryError) as exc:
            raise InputError(f"cannot read replay file: {exc}", where=str(self.path), code="input.replay")
        lengths = {len(v) for v in arrays.values() if v.ndim}
        if len(lengths) != 1:
            raise InputError("replay arrays need one common sample count on axis 0", where=str(self.path),
                             code="input.replay")
        n = lengths.pop()
        return [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)]

    def run(self, stop: threading.Event) -> None:
        try:
            samples = self._samples()
        except InputError as exc:      # restarting will not make the file readable: report, end
            self.daemon.event({"event": "source_failed", "source": self.name, "error": exc.to_dict()})
            return
        while True:
            for i, sample in enumerate(samples):
                if stop.is_set():
                    return
                self.daemon.submit(self.name, sample, {"index": i}, None)
                if self.rate > 0:
                    stop.wait(1.0 / self.rate)
            if not self.loop:
                return


class MqttSource:
    """Inputs from an MQTT topic, at least once: QoS 1 with manual acks on the telemetry layer's
    input connection (persistent session, Receive Maximum).

    paho's network thread only appends a message to ``_inbox``; this source's own thread submits
    it to the daemon (blocking there is backpressure, and stalls nothing else: keepalive, commands
    and PUBACKs carry on). A message is acked once it is answered -- its result written to the
    sinks (spooled), or refused as bad input -- like a watched-folder file that moves to done/ only
    after its result is written. What was not acked when the daemon died is redelivered after the
    restart. An input the daemon could not take now (no worker ready) is submitted again; one
    caught by a shutdown is left unacked for the next start.

    Memory stays bounded by the telemetry layer, not by the broker: Receive Maximum
    (``input_receive_max``) asks the broker to stop while that many inputs await their ack, but
    mosquitto 2.0.11 honours it only for the first batch; so the input connection also pauses
    itself once ``input_max_held`` inputs are held unanswered here (``edge/telemetry/inflow.py``).
    ``held`` / ``held_max`` count what this source received and has not answered yet, as a check
    on that bound from this side.
    """
    kind = "mqtt"
    RETRY_S = 0.5

    def __init__(self, daemon, topic: str, telemetry, dry_run: bool = False):
        if telemetry is None and not dry_run:
            raise UsageError("an mqtt source needs a broker (--broker or [telemetry] broker)", code="usage.source")
        self.daemon, self.topic, self.telemetry = daemon, topic, telemetry
        self.name = f"mqtt:{topic}"
        self._inbox: deque = deque()
        self._wake = threading.Event()
        self._count_lock = threading.Lock()
        self.held = 0           # received from the broker, not yet answered (acked)
        self.held_max = 0
        # Subscribed now, before telemetry starts: the broker may hand over what it kept for us
        # at once, and that must find its handler.
        if telemetry is not None:
            telemetry.subscribe_input(topic, self._on_message)

    def _on_message(self, msg) -> None:
        """paho's thread: hand over, never block."""
        with self._count_lock:
            self.held += 1
            self.held_max = max(self.held_max, self.held)
        self._inbox.append(msg)
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                msg = self._inbox.popleft()
            except IndexError:
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            self._submit(msg, stop)

    def _submit(self, msg, stop: threading.Event) -> None:
        payload = bytes(getattr(msg, "payload", b""))
        meta = {"topic": getattr(msg, "topic", self.topic), "input_sha256": hashlib.sha256(payload).hexdigest()}
        if getattr(msg, "dup", False):
            meta["redelivered"] = True       # may have been answered before the restart too
        reply_to = getattr(msg, "response_topic", None)
        # MQTT 5 request/response: a sender that names a response topic gets its result there
        # (with its correlation data) as well as on the results stream.
        reply = self._replier(reply_to, getattr(msg, "correlation", None)) if reply_to else None
        self.daemon.submit(self.name, payload, meta, self._answered(msg, reply, stop))

    def _answered(self, msg, reply, stop: threading.Event):
        def on_done(result) -> None:
            if not result.ok and result.error.get("code") in RETRY_LATER:
                if not (stop.is_set() or self.daemon.stop_event.is_set()):
                    threading.Timer(self.RETRY_S, self._retry, (msg,)).start()
                return                       # stopping: unacked, the broker resends it next start
            if reply is not None:
                reply(result)
            with self._count_lock:
                self.held -= 1
            ack = getattr(msg, "ack", None)
            if ack is not None:
                ack()
        return on_done

    def _retry(self, msg) -> None:
        self._inbox.appendleft(msg)
        self._wake.set()

    def _replier(self, topic: str, correlation: bytes | None):
        def on_done(result) -> None:
            info = self.daemon.pool.info
            body = json.dumps(result.to_record(info.labels if info else None), default=str).encode()
            try:
                self.telemetry.client.publish(topic, body, qos=1, correlation=correlation)
            except GanglionError as exc:      # the results stream still has it, with its seq
                self.daemon.event({"event": "reply_failed", "topic": topic, "error": exc.to_dict()})
        return on_done


def make_source(kind: str, daemon, *, path=None, topic=None, telemetry=None, rate_hz=0.0, loop=False,
                device=0, fps=0.0, dry_run: bool = False):
    """The source registry: one line per kind. ``dry_run``: check, create nothing, connect nothing."""
    if kind == "folder":
        return FolderSource(daemon, _need(path, "folder", "path"), create=not dry_run)
    if kind == "replay":
        return ReplaySource(daemon, _need(path, "replay", "path"), rate_hz=rate_hz, loop=loop)
    if kind == "mqtt":
        return MqttSource(daemon, _need(topic, "mqtt", "topic"), telemetry, dry_run=dry_run)
    if kind == "camera":
        return CameraSource(daemon, path or device, fps, loop=loop)   # path: a video file
    raise UsageError(f"unknown source kind {kind!r}", code="usage.source",
                     hint="use folder, replay, mqtt or camera")


def _need(value, kind: str, key: str):
    if not value:
        raise UsageError(f"a {kind} source needs '{key}'", code="usage.source")
    return value
