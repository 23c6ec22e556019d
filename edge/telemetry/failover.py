"""Broker failover: which broker of the configured list to use now, when to move on, when to return.

    brokers = ["mqtt://node1:1883", "mqtt://node2:1883"]     # [telemetry] brokers / --broker (repeatable)

The list is in order of preference. ``BrokerList`` is the pure decision (no paho, no sockets
except ``tcp_reachable``); ``edge.telemetry.mqtt.MqttClient`` acts on it:

- **Move on**: ``FAILOVER_AFTER`` connection attempts in a row fail on the current broker (TCP
  refused or timed out, closed before a CONNACK, CONNACK refused) -> the next broker, wrapping
  around. A link that drops is not a failure by itself: paho reconnects first, so a broker restart
  shorter than the backoff costs no switch.
- **Come back**: while on a broker other than the first, every ``failback_s`` seconds the brokers
  before it are probed (a TCP connect); the first that answers is used again. A probe is only a
  hint: if the real connection then fails, the rule above moves on again, at most once per
  ``failback_s``.
- Every switch is one ``{"event": "broker_switch", "from", "to", "reason", "switches"}`` (the
  device records it as an event) and one log line.

Why nothing is lost across a switch: the spool keeps every record until a broker acknowledged it,
and a switch rewinds the publisher to the oldest unacknowledged record (publisher.py), so the new
broker gets everything the old one did not confirm, in seq order. A record the old broker took but
whose PUBACK never came is sent twice: consumers drop duplicates by ``seq`` (docs/telemetry.md).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable, Sequence

from core.errors import UsageError
from edge.telemetry.config import BrokerUrl
from edge.telemetry.errors import BrokerError

log = logging.getLogger("ganglion.telemetry.mqtt")

FAILOVER_AFTER = 2          # failed connection attempts in a row before moving to the next broker
FAILBACK_S = 30.0           # how often a device away from its first broker checks whether it is back


class BrokerList:
    def __init__(self, urls: Sequence[BrokerUrl], *, failover_after: int = FAILOVER_AFTER,
                 failback_s: float = FAILBACK_S, clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise UsageError("no broker to connect to", where="telemetry.brokers", code="usage.broker_url",
                             hint="give at least one broker URL")
        self.urls = list(urls)
        self.index = 0
        self.failures = 0
        self.switches = 0
        self.failover_after, self.failback_s, self._clock = failover_after, failback_s, clock
        self._last_move = clock()

    @property
    def current(self) -> BrokerUrl:
        return self.urls[self.index]

    @property
    def many(self) -> bool:
        return len(self.urls) > 1

    def connected(self) -> None:
        """A CONNACK 0 from the current broker: its failure count starts again."""
        self.failures = 0

    def failed(self, reason: str) -> dict | None:
        """One failed connection attempt on the current broker; the switch event when it is time
        to move to the next one (``current`` is then the new broker), else None."""
        self.failures += 1
        if not self.many or self.failures < self.failover_after:
            return None
        return self.move_to((self.index + 1) % len(self.urls),
                            f"{self.failures} connection attempts failed ({reason})")

    def failback_due(self) -> bool:
        return self.index > 0 and self._clock() - self._last_move >= self.failback_s

    def failback(self, reachable: Callable[[BrokerUrl], bool]) -> dict | None:
        """The switch event back to the first broker before the current one that ``reachable``
        says answers, else None. Checked at most once per ``failback_s``."""
        if not self.failback_due():
            return None
        self._last_move = self._clock()
        for index in range(self.index):
            if reachable(self.urls[index]):
                return self.move_to(index, "a broker earlier in the list answers again")
        return None

    def move_to(self, index: int, reason: str) -> dict:
        old = self.current
        self.index, self.failures = index, 0
        self.switches += 1
        self._last_move = self._clock()
        return {"event": "broker_switch", "from": str(old), "to": str(self.current), "reason": reason,
                "switches": self.switches}


def tcp_reachable(url: BrokerUrl, timeout: float = 2.0) -> bool:
    """True when a TCP connection to the broker's port opens (the failback hint)."""
    try:
        with socket.create_connection((url.host, url.port), timeout=timeout):
            return True
    except OSError:
        return False


class Switching:
    """The acting half of failover, mixed into ``mqtt.MqttClient`` (kept here so the adapter stays
    small): count failed attempts, switch brokers, check for the way back, fall back to MQTT 3.1.1
    (auto), and rebuild the paho client -- for a switch and for the fallback alike. Uses the
    client's ``brokers`` (a BrokerList), ``_client``, ``_make_paho()``, ``_start_loop()``,
    ``_run_lock``, ``_stopped``, ``_switching``, ``_halt``, ``_connected``,
    ``_inputs_disconnected()`` (inflow.py), ``_hooks``, ``_call`` and, for the fallback,
    ``mqtt_version``, ``protocol``, ``negotiated``, ``_fallback_reason``, ``_paho_args``."""

    def _start_failback(self) -> None:
        if self.brokers.many:
            self._halt.clear()
            threading.Thread(target=self._failback_loop, name="mqtt-failback", daemon=True).start()

    def _failback_loop(self) -> None:
        while not self._halt.wait(min(1.0, self.brokers.failback_s)):
            if self.connected and not self._switching and self.brokers.failback_due():
                event = self.brokers.failback(tcp_reachable)
                if event is not None:
                    self._switch(event)

    def _attempt_failed(self, reason: str) -> None:
        """Paho's thread: one connection attempt failed; move on when the list says so."""
        if self._switching or self._stopped:
            return
        event = self.brokers.failed(reason)
        if event is not None:
            self._switch(event)

    def _switch(self, event: dict) -> None:
        """Use ``brokers.current`` from now on: one log line here, the event through ``on_switch``."""
        self._switching = True
        log.warning("MQTT broker switch for %s: %s -> %s (%s)", self._paho_args["client_id"], event["from"],
                    event["to"], event["reason"])
        threading.Thread(target=self._rebuild, args=(event,), name="mqtt-failover", daemon=True).start()

    def _rebuild(self, event: dict | None = None) -> None:
        """A fresh paho client for the current broker and protocol (paho fixes both at
        construction). Runs on a thread of ours: paho's own thread cannot join itself."""
        try:
            with self._run_lock:
                if self._stopped:
                    return
                old = self._client
                try:
                    old.disconnect()        # a live link closes cleanly: no Last Will
                except (OSError, ValueError):
                    pass
                old.loop_stop()             # until here the old client's callbacks still count
                self._client = self._make_paho()
                self._client.connect_timeout = old.connect_timeout
                self._connected.clear()
                self._inputs_disconnected()     # unacked inputs come again from the new broker
                if event is not None:
                    self._call(self._hooks[5], dict(event))
                try:
                    self._start_loop()
                except BrokerError as exc:
                    log.error("MQTT cannot connect to %s: %s", self.url, exc.message)
        finally:
            self._switching = False

    # -- protocol negotiation (auto) ----------------------------------------------------------
    def _may_fall_back(self) -> bool:
        return self.mqtt_version == "auto" and self.protocol == "5" and self.negotiated is None

    def _fall_back(self, reason: str) -> None:
        """Paho's thread: speak 3.1.1 from now on. A thread of ours swaps the paho client (paho's
        own thread cannot join itself)."""
        self.protocol = "3.1.1"
        self._fallback_reason = reason
        self.last_error = reason
        self._switching = True
        threading.Thread(target=self._rebuild, name="mqtt-fallback-311", daemon=True).start()

    def _announce_protocol(self) -> None:
        """The first CONNACK 0: one log line and one event naming the protocol and why."""
        if self.mqtt_version != "auto":
            reason = f"mqtt_version = {self.mqtt_version!r} (set explicitly)"
        else:
            reason = self._fallback_reason or "the broker accepted MQTT 5"
        self.negotiated = {"event": "mqtt_protocol", "version": self.protocol, "requested": self.mqtt_version,
                           "reason": reason, "broker": str(self.url)}
        # a warning when the broker refused MQTT 5: the operator should know what the device lost
        level = logging.WARNING if self._fallback_reason else logging.INFO
        log.log(level, "MQTT %s with %s as %s: %s", self.protocol, self.url, self._paho_args["client_id"], reason)
        self._call(self._hooks[4], dict(self.negotiated))
