"""``ganglion fleet serve``: the hub -- MQTT in, one loop that owns the database, commands out.

    broker --status/metrics/events--> inbox --> loop: registry.ingest, rollouts.tick (plan.decide),
                                                      outcomes of transfers/reloads, operator calls
    broker <--cmd/deploy.*, reload--  Rollouts' thread pool (signed with the hub's key)
    broker <--cmd/<verb> on _fleet--> CommandRouter (the devices' command code) -> call() -> loop

Everything that writes runs on the loop thread, one transaction per batch of inbox items and one
per tick, so the database has one writer and SQLite's lock never waits. Records are subscribed
per kind (``+/status``, ``+/metrics``, ``+/events``) rather than ``+/#``: results are the bulk of a
fleet's traffic and the hub needs none of them, nor the command traffic it sends itself.
The hub announces itself retained on ``ganglion/v1/_fleet/status`` (Last Will: offline).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from edge.telemetry.commands import CommandLog, CommandRouter
from edge.telemetry.config import broker_urls
from edge.telemetry.mqtt import Message, MqttClient, Will
from edge.telemetry.requester import Requester
from edge.telemetry.topics import command_filter, device_topic, envelope
from edge.telemetry.transfer import TransferReceiver
from fleet import deployments, views
from fleet.control import HUB_ID
from fleet.errors import FleetError
from fleet.plan import Limits
from fleet.registry import Registry
from fleet.rollout import Rollouts
from fleet.store import Store

log = logging.getLogger("ganglion.fleet.hub")
BATCH = 2000           # inbox items applied per transaction
FLUSH_S = 1.0          # registry rows and change entries written at most this often


class Hub:
    def __init__(self, broker: str | Sequence[str], db: str | Path, *, key=None, operator_keys: list | None = None,
                 trusted_keys: list | None = None, firmware_keys: list | None = None, limits: Limits = Limits(),
                 tick_s: float = 0.2,
                 mqtt_version: str = "auto", **connection):
        db = Path(db).resolve()
        self.store = Store(db)
        self.registry = Registry(self.store)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.trusted_keys, self.firmware_keys, self.tick_s = trusted_keys, firmware_keys, tick_s
        self.artifacts = db.parent / f"{db.stem}-artifacts"
        url = broker_urls(broker)
        offline = envelope(None, time.time(), HUB_ID, "status", {"state": "offline", "reason": "lost"})
        self.client = MqttClient(url, client_id=f"ganglion-fleet-{db.stem}"[:64], mqtt_version=mqtt_version,
                                 will=Will(device_topic(HUB_ID, "status"), offline),
                                 on_connect=self._announce, **connection)
        for kind in ("status", "metrics", "events"):
            self.client.subscribe(device_topic("+", kind), self._on_record)
        self.router = CommandRouter(HUB_ID, reply=self._reply, event=lambda ev: log.warning("refused: %s", ev),
                                    log_db=CommandLog(db.parent / f"{db.stem}-commands.db"),
                                    trusted_keys=operator_keys, max_bytes=256 * 1024)
        self._register()
        self.client.subscribe(command_filter(HUB_ID), self.router.on_message)
        self.requester = Requester(url, mqtt_version=mqtt_version, **connection)
        self.rollouts = Rollouts(self.store, self.registry, self.requester, self.inbox.put, key=key, limits=limits)
        self.stopping = threading.Event()

    def _register(self) -> None:
        r = self.router.register
        TransferReceiver(self.artifacts / "uploads", max_bytes=512 << 20).install(r, "deploy", self._on_upload)
        r("status", lambda a: self.call(lambda: views.deployments(self.store) if a.get("list")
                                        else views.deployment(self.store, a.get("id"))))
        for verb in ("pause", "resume", "abort", "rollback"):
            r(verb, lambda a, verb=verb: self.call(lambda: deployments.transition(self.store, self.rollouts,
                                                                                   verb, a.get("id"))))
        r("overview", lambda a: self.call(lambda: views.overview(self.registry, self.store)))
        r("devices", lambda a: {"devices": self.call(lambda: views.devices(
            self.registry, tag=a.get("tag"), version=a.get("version"), online=a.get("online"),
            prefix=a.get("prefix")))})
        r("device", lambda a: self.call(lambda: views.device(self.registry, self.store, str(a.get("id")))))
        r("changes", lambda a: {"changes": self.call(lambda: views.changes(
            self.store, int(a.get("since", 0)), int(a.get("limit", 500))))})

    def _on_upload(self, path: Path, info: dict, args: dict) -> dict:
        options = {k: v for k, v in args.items() if k != "transfer"}
        return self.call(lambda: deployments.create(self.store, self.registry, self.artifacts, path,
                                                    {**options, "name": info.get("name")}, self.trusted_keys,
                                                    self.firmware_keys))

    # -- MQTT callbacks (paho's thread): hand over to the loop ------------------------------------
    def _on_record(self, message: Message) -> None:
        self.inbox.put(("record", message.topic, message.payload, time.time()))

    def _reply(self, topic: str | None, payload: bytes, correlation: bytes | None) -> None:
        if topic:
            self.client.publish(topic, payload, correlation=correlation)

    def _announce(self) -> None:
        self.client.publish(device_topic(HUB_ID, "status"), envelope(
            None, time.time(), HUB_ID, "status", {"state": "online", "since": round(time.time(), 3)}), retain=True)

    def call(self, fn, timeout: float = 60.0):
        """Run ``fn`` on the loop thread (the database's one writer) and return its result."""
        if self.stopping.is_set():
            raise FleetError("the hub is stopping", where=HUB_ID, code="fleet.stopping", hint="try again shortly")
        future: Future = Future()
        self.inbox.put(("call", fn, future))
        return future.result(timeout)

    # -- the loop ---------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "Hub":
        self.requester.__enter__()
        self.client.connect(timeout)
        return self

    def run(self) -> None:
        next_tick = next_flush = 0.0
        while not self.stopping.is_set():
            wait = max(0.0, min(next_tick, next_flush) - time.monotonic())
            try:
                first = self.inbox.get(timeout=wait)
            except queue.Empty:
                first = None
            if first is not None:
                self._batch(first)
            now = time.monotonic()
            if now >= next_tick:
                with self.store.transaction():
                    self.rollouts.tick(time.time())
                next_tick = now + self.tick_s
            if now >= next_flush:
                self.flush()
                next_flush = now + FLUSH_S

    def _batch(self, first: tuple) -> None:
        settled = []
        with self.store.transaction():
            item = first
            for _ in range(BATCH):
                settled += self._handle(item)
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
        for future, ok, value in settled:           # answered only once the batch is committed
            future.set_result(value) if ok else future.set_exception(value)

    def _handle(self, item: tuple) -> list:
        kind = item[0]
        if kind == "record":
            for change in self.registry.ingest(item[1], item[2], item[3]):
                self.store.change(*change)
        elif kind in ("sent", "rolled_back"):
            self.rollouts.on_result(*item)
        elif kind == "call":
            try:
                return [(item[2], True, item[1]())]
            except Exception as exc:      # the caller's reply carries it (typed errors keep their code)
                return [(item[2], False, exc)]
        return []

    def flush(self) -> None:
        with self.store.transaction():
            self.registry.flush()

    def stop(self) -> None:
        """Ask ``run`` to return (a signal handler may call it); ``close`` then cleans up."""
        self.stopping.set()

    def close(self) -> None:
        self.stopping.set()
        while True:                  # calls the loop will never run: answer them, so handlers return
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item[0] == "call":
                item[2].set_exception(FleetError("the hub is stopping", where=HUB_ID, code="fleet.stopping"))
        self.router.close()
        self.rollouts.close()
        self.flush()
        self.client.publish(device_topic(HUB_ID, "status"), envelope(
            None, time.time(), HUB_ID, "status", {"state": "offline", "reason": "stopped"}), retain=True)
        self.client.stop()
        self.requester.__exit__(None, None, None)
        self.store.close()
