"""``Telemetry``: the device's one handle on MQTT -- spool, publisher, status, commands, transfers.

    tm = Telemetry(TelemetryConfig(broker="mqtt://127.0.0.1:1883"), "cam1", "/var/lib/ganglion/spool.db")
    tm.register_command("reload", lambda args: {...})
    tm.start()                                   # returns at once; connects and reconnects in the background
    tm.record("metrics", {"latency_ms": {"p95": 2.1}, "throughput": 480.0})   # -> seq, durable on disk
    tm.record("results", {"label": "cat"}, subtopic="mobilenet")
    tm.record("status", {"model": "mobilenet"})  # merged into the retained status document (no seq)
    tm.stop()                                    # flush briefly, publish status offline, disconnect

Input topics (``subscribe_input``) use a second MQTT connection, ``ganglion-<device>-in``: a
persistent session (clean_start off, ``input_session_expiry``), QoS 1, manual acks and Receive
Maximum ``input_receive_max``. The broker holds what the daemon has not answered yet and resends
it after a crash; the main connection keeps its clean session, so commands sent while the device
was down are not replayed at it (a stale ``reload`` an hour later would surprise an operator).

Wiring: ``record`` appends to the spool and wakes the publisher; the publisher drains it. The
status document is retained and published directly on every (re)connect -- a last value, not a
stream, so it is not spooled and takes no sequence number; the broker publishes the Last Will
(status ``offline``) if the device vanishes without ``stop()``. Metrics get the spool's and the
publisher's counters added under ``"telemetry"``; spool overflow is reported as an event.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from core import keys
from core.errors import UsageError
from edge.telemetry.commands import CommandLog, CommandRouter
from edge.telemetry.config import TelemetryConfig, check_device_id
from edge.telemetry.errors import TelemetryError
from edge.telemetry.mqtt import Message, MqttClient, Will
from edge.telemetry.publisher import Publisher
from edge.telemetry.spool import Spool
from edge.telemetry.topics import command_filter, default_reply_topic, device_topic, envelope
from edge.telemetry.transfer import TransferReceiver

log = logging.getLogger("ganglion.telemetry")
OVERFLOW_REPORT_S = 5.0     # at most one spool_overflow event per this many seconds


class Telemetry:
    def __init__(self, cfg: TelemetryConfig, device_id: str, spool_path: str | Path):
        self.cfg = cfg
        self.device_id = check_device_id(device_id)
        self.spool_path = Path(spool_path)
        self.spool = Spool(spool_path, max_records=cfg.spool_max_records, max_bytes=cfg.spool_max_bytes,
                           sync=cfg.spool_sync)
        self.publisher = Publisher(self.spool, window=cfg.inflight)
        self._started_at = time.time()
        self._status: dict = {"state": "online", "since": round(self._started_at, 3),
                              "commands": "signed" if cfg.command_keys else "unsigned"}
        self._status_lock = threading.Lock()
        self._reported_dropped = 0     # a restarted device re-reports the persistent total once
        self._last_overflow_report = 0.0
        self._last_pause_report = -OVERFLOW_REPORT_S
        will = envelope(None, self._started_at, self.device_id, "status", {"state": "offline", "reason": "lost"})
        self.client = self._connection(
            f"ganglion-{self.device_id}", will=Will(device_topic(self.device_id, "status"), will),
            on_protocol=self._protocol_event, on_connect=self._on_connect, on_disconnect=self.publisher.on_disconnect,
            on_publish=self.publisher.on_publish, on_switch=self._broker_switch)
        self.publisher.client = self.client
        self.commands = CommandRouter(
            self.device_id, reply=self._send_reply, event=self._command_event,
            log_db=CommandLog(self.spool_path), trusted_keys=_load_keys(cfg.command_keys),
            window_s=cfg.command_window_s, max_bytes=cfg.command_max_bytes)
        self.commands.register("ping", self._ping)
        self.commands.register("status", self._status_cmd)
        self.inputs: MqttClient | None = None      # made by the first subscribe_input
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Telemetry":
        if not self.commands.trusted_keys:
            self._warn_unsigned()
        self.publisher.start()
        self.client.subscribe(command_filter(self.device_id), self.commands.on_message)
        self.client.start()
        if self.inputs is not None:
            self.inputs.start()
        self._started = True
        return self

    def _warn_unsigned(self) -> None:
        """No command keys: whoever can publish to this device's cmd/ topics controls it. Said at
        every start, as a warning in the log; the retained status says ``"commands": "unsigned"``."""
        log.warning("COMMANDS ARE NOT SIGNED on %s: anyone who can publish to %s controls this device "
                    "(reload, config.set, deploy). Set [telemetry] command_keys = [\"ops.pub\"] (ganglion keys "
                    "generate) and restrict the broker (ganglion telemetry acl).", self.device_id,
                    command_filter(self.device_id))

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.client.wait_connected(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every spooled record is acknowledged by the broker."""
        return self.publisher.flush(timeout)

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Flush briefly, announce ``offline`` (retained), disconnect. Unsent records stay spooled."""
        if self.client.connected:
            self.publisher.flush(flush_timeout)
            try:
                self.client.publish_wait(device_topic(self.device_id, "status"),
                                         self._status_payload("offline", reason="stopped"), retain=True,
                                         timeout=flush_timeout)
            except TelemetryError as exc:
                log.warning("could not announce offline: %s", exc.message)
        self.commands.close()
        if self.inputs is not None:    # unacked inputs stay with the broker for the next start
            self.inputs.stop()
        self.publisher.stop()          # no new publishes ...
        self.client.stop()
        self.publisher.flush_acks()    # ... and PUBACKs that came in meanwhile still delete their records
        self.spool.close()

    # -- records -------------------------------------------------------------------------------
    def record(self, kind: str, payload: dict, subtopic: str | None = None) -> int:
        """Spool one record and return its seq (0 for ``status``, which is a retained last value)."""
        device_topic(self.device_id, kind, subtopic)          # checks kind and subtopic
        if kind == "status":
            with self._status_lock:
                self._status.update(payload)
            if self.client.connected:
                self._publish_status()
            return 0
        return self.record_many(kind, [payload], subtopic)[0]

    def record_many(self, kind: str, payloads: list[dict], subtopic: str | None = None) -> list[int]:
        """Spool several records of one kind in one transaction (one fsync): e.g. a micro-batch's
        results. Returns their seqs (consecutive)."""
        topic = device_topic(self.device_id, kind, subtopic)
        if kind == "status":
            raise UsageError("status is a single retained document: use record('status', ...)",
                             code="usage.telemetry_kind")
        now = time.time()
        datas = [dict(p) for p in payloads]
        if kind == "metrics":
            for data in datas:
                data.setdefault("telemetry", self.stats())
        seqs = self.spool.append_many(topic, [_builder(now, self.device_id, kind, d) for d in datas])
        self.publisher.wake()
        if self.client.connected:
            self._report_overflow()
        return seqs

    def _report_overflow(self, force: bool = False) -> None:
        # Reported only while connected (and on every connect): an event spooled into a full spool
        # during an outage would itself be the next record dropped. dropped_total is cumulative and
        # persistent, so a lost report is made good by the next one.
        dropped = self.spool.stats()["dropped"]
        now = time.monotonic()
        if dropped > self._reported_dropped and (force or now - self._last_overflow_report >= OVERFLOW_REPORT_S):
            new, self._reported_dropped = dropped - self._reported_dropped, dropped
            self._last_overflow_report = now
            log.warning("telemetry spool full: dropped %d oldest record(s) (%d in total)", new, dropped)
            topic = device_topic(self.device_id, "events")
            data = {"event": "spool_overflow", "dropped": new, "dropped_total": dropped}
            self.spool.append(topic, lambda s: envelope(s, time.time(), self.device_id, "events", data))

    def stats(self) -> dict:
        spool = self.spool.stats()
        return {"connected": self.client.connected, "last_error": self.client.last_error,
                "mqtt_version": self.client.protocol, "broker": str(self.client.url),
                "broker_switches": self.client.brokers.switches,
                "spool_depth": spool["depth"], "spool_bytes": spool["bytes"],
                "spool_dropped": spool["dropped"], "last_seq": spool["last_seq"],
                "inflight": self.publisher.inflight, **self.publisher.counters,
                "commands": dict(self.commands.counters),
                **(self._input_stats() if self.inputs is not None else {})}

    def _input_stats(self) -> dict:
        gate = self.inputs.gate.stats()
        return {"inputs_connected": self.inputs.connected, "inputs_unacked": len(self.inputs.acks),
                "inputs_over_receive_max": self.inputs.over_receive_max,
                "inputs_protocol": self.inputs.protocol,
                **{f"inputs_{k}": gate[k] for k in ("held", "held_max", "held_limit", "paused", "pauses",
                                                     "shed", "adopted")}}

    # -- commands and subscriptions ---------------------------------------------------------------
    def register_command(self, verb: str, handler: Callable[[dict], dict]) -> None:
        """``handler(args) -> dict`` runs on a worker thread; raise a GanglionError to refuse."""
        self.commands.register(verb, handler)

    def register_transfer(self, verb: str, on_complete: Callable[[Path, dict, dict], dict]) -> TransferReceiver:
        """Chunked file transfer under ``<verb>.begin/.chunk/.status/.commit`` (see transfer.py)."""
        root = Path(self.cfg.transfer_dir) if self.cfg.transfer_dir else self.spool_path.parent / "transfers"
        receiver = TransferReceiver(root, max_bytes=self.cfg.transfer_max_bytes,
                                    max_chunk=max(1024, self.cfg.command_max_bytes // 2))
        receiver.install(self.register_command, verb, on_complete)
        return receiver

    def subscribe(self, topic: str, callback: Callable[[Message], None]) -> None:
        """``callback(message)`` on paho's thread for every message on ``topic``, acked at once, on
        the main (clean-session) connection. Input sources use ``subscribe_input``."""
        self.client.subscribe(topic, callback)

    def subscribe_input(self, topic: str, callback: Callable[[Message], None]) -> None:
        """Inputs with at-least-once delivery: ``callback(message)`` runs on paho's thread and must
        only hand the message over; call ``message.ack()`` once it is answered -- every QoS 1
        message, exactly once, refused ones included: at ``input_max_held`` unanswered messages
        the input connection pauses until enough are (inflow.py). Call before ``start()`` when
        possible, so what the broker kept for us has a handler when it arrives."""
        first = self.inputs is None
        if first:
            self.inputs = self._connection(
                f"ganglion-{self.device_id}-in", session_expiry=self.cfg.input_session_expiry,
                manual_ack=True, receive_maximum=self.cfg.input_receive_max,
                max_held=self.cfg.input_held_limit, on_flow=self._input_flow)
        self.inputs.subscribe(topic, callback)
        if first and self._started:
            self.inputs.start()

    # -- internals -------------------------------------------------------------------------------
    def _connection(self, client_id: str, **extra) -> MqttClient:
        """An MQTT connection to the configured broker (URL, credentials, TLS, backoff); both the
        main and the input connection are made here, so they can never differ in those."""
        cfg = self.cfg
        return MqttClient(cfg.broker_urls, client_id=client_id, keepalive=cfg.keepalive, username=cfg.username,
                          password=cfg.password, ca_file=cfg.ca_file, cert_file=cfg.cert_file,
                          key_file=cfg.key_file, reconnect_min=cfg.reconnect_min,
                          reconnect_max=cfg.reconnect_max, failback_s=cfg.broker_failback_s,
                          mqtt_version=cfg.mqtt_version, **extra)

    def _on_connect(self) -> None:
        self._publish_status()
        try:
            self._report_overflow(force=True)
        except TelemetryError as exc:
            log.error("cannot report spool overflow: %s", exc.message)
        self.publisher.on_connect()

    def _status_payload(self, state: str, **extra) -> bytes:
        with self._status_lock:
            data = {**self._status, "state": state, **extra}
        return envelope(None, time.time(), self.device_id, "status", data)

    def _publish_status(self) -> None:
        self.client.publish(device_topic(self.device_id, "status"), self._status_payload("online"), retain=True)

    def _send_reply(self, topic: str | None, payload: bytes, correlation: bytes | None) -> None:
        try:
            self.client.publish(topic or default_reply_topic(self.device_id), payload, qos=1,
                                correlation=correlation)
        except TelemetryError as exc:
            log.warning("could not send a command reply: %s", exc.message)

    def _protocol_event(self, event: dict) -> None:
        """The main connection's first CONNACK: which MQTT version, and why (mqtt.py logged it).
        An event only for MQTT 3.1.1 (a fallback or a pinned version): on an MQTT 5 broker the
        record stream stays what it always was."""
        if event["version"] == "5":
            return
        try:
            self.record("events", event)
        except TelemetryError as exc:
            log.error("cannot record the mqtt_protocol event: %s", exc.message)

    def _broker_switch(self, event: dict) -> None:
        """The main connection moved to another broker (mqtt.py logged it): the publisher sends
        again what the old one did not acknowledge, and the switch is one event in the stream."""
        self.publisher.on_switch(event)
        try:
            self.record("events", event)
        except TelemetryError as exc:
            log.error("cannot record the broker_switch event: %s", exc.message)

    def _command_event(self, event: dict) -> None:
        log.warning("command refused: %s", event)
        self.record("events", event)

    def _input_flow(self, event: dict) -> None:
        """The input connection paused (paho's thread): one ``input_paused`` event per
        ``OVERFLOW_REPORT_S`` at most; every pause is counted in ``inputs_pauses`` anyway."""
        now = time.monotonic()
        if now - self._last_pause_report < OVERFLOW_REPORT_S:
            return
        self._last_pause_report = now
        try:
            self.record("events", event)
        except TelemetryError as exc:
            log.error("cannot record an input_paused event: %s", exc.message)

    def _ping(self, args: dict) -> dict:
        return {"pong": True, "uptime_s": round(time.time() - self._started_at, 3)}

    def _status_cmd(self, args: dict) -> dict:
        with self._status_lock:
            status = dict(self._status)
        return {"status": status, "telemetry": self.stats(), "verbs": self.commands.verbs}


def _builder(ts: float, device: str, kind: str, data: dict):
    return lambda seq: envelope(seq, ts, device, kind, data)


def _load_keys(paths) -> list:
    if not paths:
        return []
    return keys.load_publics(paths)
