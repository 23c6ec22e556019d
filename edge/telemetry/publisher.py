"""The publisher: one thread that drains the spool to the broker, in order, with a bounded window.

    spool (SQLite) --read(after=cursor)--> publish QoS 1 --PUBACK--> ack (delete from spool)

At most ``window`` records await their PUBACK at once; that window is what turns a round trip per
record into a stream (a local broker sustains thousands of records/s with 64 in flight). A record is
deleted from the spool only after its PUBACK, in batches, so a crash replays what was not yet
acknowledged: delivery is AT LEAST ONCE, and a consumer drops the rare duplicate by ``seq``.

Order across outages: when the link drops, paho keeps the unacknowledged messages and re-sends
them first thing after the reconnect. paho calls ``on_connect`` *before* it re-sends them, so the
publisher holds new records back until every message from before the outage is acknowledged;
otherwise a new record could overtake an old one.

Across a broker switch (failover.py) the old client's in-flight messages are gone with it: the
publisher forgets them and starts again from the oldest record still in the spool (``on_switch``),
so the new broker gets every record the old one did not acknowledge, in seq order -- and a record
whose PUBACK was lost with the old broker twice (consumers drop it by seq).
"""
from __future__ import annotations

import logging
import threading
import time

from edge.telemetry.errors import PublishError, TelemetryError
from edge.telemetry.spool import Spool

log = logging.getLogger("ganglion.telemetry.publisher")
ACK_BATCH = 256          # delete acknowledged records once this many are pending ...
ACK_INTERVAL_S = 0.1     # ... or this long after the last delete


class Publisher:
    def __init__(self, spool: Spool, *, window: int = 64):
        self.spool = spool
        self.window = window
        self.client = None                       # an MqttClient, set before start()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._inflight: dict[int, int] = {}      # mid -> seq
        # PUBACKs that arrive before publish() returned the mid (paho's thread is fast). Mids of other
        # publishes (replies, status) land here too and age out: paho's mid counter takes 65535
        # publishes to wrap, so an entry older than a few seconds can never match a record.
        self._early: dict[int, tuple[bool, float]] = {}
        self._acked: list[int] = []
        self._resync = False                     # after an outage: old in-flight must clear first
        self._rewind = False                     # after a broker switch: send again from the spool's start
        self._cursor = 0                         # highest seq handed to paho
        self._last_ack_flush = 0.0
        self._thread: threading.Thread | None = None
        self.counters = {"published": 0, "acked": 0, "rejected": 0, "reconnects": 0}

    # -- hooks wired into MqttClient (paho's network thread) --------------------------------
    def on_connect(self) -> None:
        self._wake.set()

    def on_disconnect(self, reason: str) -> None:
        with self._lock:
            self._resync = True
            self.counters["reconnects"] += 1
        log.info("broker link lost (%s); %d record(s) in flight will be re-sent", reason, len(self._inflight))

    def on_publish(self, mid: int, ok: bool) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early[mid] = (ok, time.monotonic())
                return
            self._settle(seq, ok)
        self._wake.set()

    def _settle(self, seq: int, ok: bool) -> None:
        # A refused record (MQTT 5 PUBACK >= 0x80, e.g. not authorized) is not retried forever: it is
        # deleted and counted, or one bad record would block the stream.
        self._acked.append(seq)
        self.counters["acked" if ok else "rejected"] += 1
        if not ok:
            log.warning("broker refused record seq=%d", seq)

    def on_switch(self, event: dict | None = None) -> None:
        """The client now talks to another broker (failover.py): nothing in flight on the old one
        will be acknowledged. Forget it and send again from the oldest record still spooled."""
        with self._lock:
            self._inflight.clear()
            self._early.clear()          # mids of the old client: the new one counts from 1 again
            self._resync = False
            self._rewind = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ganglion-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._flush_acks(force=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                sent = self._step()
            except TelemetryError as exc:      # the spool failed (disk full?): retry, stay up
                log.error("publisher: %s", exc.render())
                self._stopping.wait(1.0)
                continue
            if not sent:
                self._wake.wait(ACK_INTERVAL_S)

    def _step(self) -> int:
        """One round: delete acked records, then send what the window allows. Returns records sent."""
        self._flush_acks(force=self._rewind)      # acked records must not be sent again
        client = self.client
        with self._lock:
            if self._rewind:
                self._rewind, self._cursor = False, 0
            if self._resync and not self._inflight:
                self._resync = False
            room = 0 if self._resync else self.window - len(self._inflight)
        if client is None or not client.connected or room <= 0:
            return 0
        records = self.spool.read(after=self._cursor, limit=room)
        for record in records:
            try:
                mid = client.publish(record.topic, record.payload, qos=record.qos, retain=record.retain)
            except PublishError as exc:     # paho refuses this record for good: drop it, count it
                log.error("dropping record seq=%d: %s", record.seq, exc.message)
                with self._lock:
                    self._settle(record.seq, False)
                self._cursor = record.seq
                continue
            with self._lock:
                if self._rewind:          # switched while this was handed to the old client
                    break
                early = self._early.pop(mid, None)
                if early is None:
                    self._inflight[mid] = record.seq
                else:
                    self._settle(record.seq, early[0])
                self.counters["published"] += 1
            self._cursor = record.seq
        return len(records)

    def flush_acks(self) -> None:
        """Delete every acknowledged record now (after stop(), before the spool closes)."""
        self._flush_acks(force=True)

    def _flush_acks(self, force: bool = False) -> None:
        # Deleting in batches keeps SQLite commits (and their fsyncs) off the per-record path.
        now = time.monotonic()
        with self._lock:
            if not force and len(self._acked) < ACK_BATCH and now - self._last_ack_flush < ACK_INTERVAL_S:
                return
            batch, self._acked = self._acked, []
            self._last_ack_flush = now
        if batch:
            self.spool.ack(batch)
        if self._early:
            old = time.monotonic() - 5.0
            with self._lock:
                for mid in [m for m, (_, t) in self._early.items() if t < old]:
                    del self._early[mid]

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the spool is empty and nothing is in flight (for a clean shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            with self._lock:
                busy = bool(self._inflight or self._acked)
            if not busy and self.spool.stats()["depth"] == 0:
                return True
            time.sleep(0.01)
        return False

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)
