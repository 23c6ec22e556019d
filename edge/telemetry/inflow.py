"""Flow control for the input connection: a bound on inputs held unanswered in the device's
memory that holds whatever the broker does. ``InputGate`` and ``AckWindow`` are the pure logic;
``InputFlow`` is the acting half, mixed into ``edge.telemetry.mqtt.MqttClient`` (no paho import
here: it acts through the client's paho handle, as failover.Switching does).

Manual acknowledgement (``MqttClient(manual_ack=True)``, for input topics): a QoS 1 message is not
PUBACKed when the callback returns but when the application calls ``message.ack()`` -- once the
work it carries is safe. ``receive_maximum`` (an MQTT 5 CONNECT property) makes the broker stop
sending once that many deliveries wait for their PUBACK: backpressure without ever blocking paho's
thread. PUBACKs go out in the order the messages arrived, as MQTT 5 section 4.6 requires, so an
``ack()`` may be held until every earlier message is acked too (``AckWindow``). Acks are bound to
the connection that delivered the message: after a reconnect the broker resends what was not
acked (persistent session) and packet ids may be reused, so a stale ``ack()`` is dropped. A
broker that sends past the Receive Maximum is counted in ``over_receive_max``. ``on_flow(event)``
reports each pause (``{"event": "input_paused", ...}``) on paho's thread.

Why a client-side bound: the input connection asks for MQTT 5 Receive Maximum N, so the broker
should stop delivering while N inputs await our PUBACK (sent only once an input is answered).
mosquitto 2.0.11 honours that only for the first batch after a connect, then releases more
than one send slot per PUBACK and soon sends the whole backlog (eclipse-mosquitto/mosquitto#2301,
"quota exceeded", open). Nothing is lost, but thousands of inputs would sit in memory.

How: ``InputGate.admit`` runs on paho's thread for every QoS 1 delivery and decides one of

    take      hand it over (``held`` + 1); its ``Token.answer`` is the message's ack()
    adopt     a redelivery (DUP) of an input we already hold from an earlier connection: not
              handed over twice; its PUBACK goes out once that input is answered
    pause     ``held`` reached ``limit``: this delivery is not taken (the broker keeps it), and
              the caller disconnects the input connection
    shed      a delivery that arrives while paused, not taken either

The connection is closed rather than its socket left unread: paho's keepalive expects every
PINGRESP, which would wait behind unread PUBLISHes; and PUBACKs go out in arrival order, so once
one delivery is not taken, no later one could be acknowledged on that connection anyway. Closing
it affects only inputs: telemetry, commands and the keepalive of the main connection are on
another connection and another paho thread. Once the daemon has answered down to ``resume_at``
held inputs, ``on_resume`` asks for a reconnect (persistent session): the broker resends what was
not acknowledged, flagged DUP. Inputs answered while disconnected, or still being worked on,
are matched to their redelivery by (topic, payload sha256, response topic, correlation data) --
identical in all four means interchangeable -- and acknowledged instead of being run again.
An input whose PUBACK was handed to paho just as the link dropped may still come back and run
twice: delivery is at least once.

``AckWindow`` (also paho-free) sends the PUBACKs of one connection in arrival order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import deque
from typing import Callable

from edge.telemetry.errors import BrokerError
from edge.telemetry.message import Message

TAKE, ADOPTED, PAUSE, SHED = "take", "adopted", "pause", "shed"
MIN_ORPHANS = 1024         # answered inputs awaiting their redelivery, kept at least (see connected)
log = logging.getLogger("ganglion.telemetry.mqtt")


def input_key(topic: str, payload: bytes, response_topic: str | None, correlation: bytes | None) -> tuple:
    """What makes two deliveries the same input (a redelivery carries all four unchanged)."""
    return (topic, hashlib.sha256(payload).digest(), response_topic, correlation)


class Token:
    """One input held by the application, across reconnects: ``answer()`` once it is answered."""
    __slots__ = ("gate", "key", "answered", "ack_fn", "seq")

    def __init__(self, gate: "InputGate", key: tuple):
        self.gate, self.key = gate, key
        self.answered = False
        self.ack_fn: Callable[[], None] | None = None     # the PUBACK on the current connection
        self.seq = 0            # when it entered an _Index (oldest first)

    def answer(self) -> None:
        self.gate._answer(self)


class InputGate:
    """``limit``: inputs handed over and not yet answered, at most (None: no bound). ``resume_at``:
    reconnect once that few are held. ``on_resume()`` is called on the answering thread and
    must return at once."""

    def __init__(self, limit: int | None = None, resume_at: int | None = None,
                 on_resume: Callable[[], None] | None = None):
        self.limit = limit
        self.resume_at = resume_at if resume_at is not None else (limit // 2 if limit else 0)
        self.on_resume = on_resume
        self.max_orphans = max(MIN_ORPHANS, 2 * (limit or 0))
        # re-entrant: ``sent`` runs inside ``_answer``/``admit``, whose PUBACK it reports
        self._lock = threading.RLock()
        self._orphans = _Index()   # held from an earlier connection, PUBACK not sent
        self._acked = _Index()     # PUBACK sent recently
        self.held = 0           # handed over, not yet answered (any connection)
        self.held_max = 0       # high-water mark of ``held``
        self.paused = False     # set at a pause, cleared by the next connection
        self._resuming = False
        self.counters = {"pauses": 0, "shed": 0, "adopted": 0}

    # -- paho's thread ----------------------------------------------------------------------
    def admit(self, key: tuple, dup: bool, add_ack: Callable[[Token], Callable[[], None]]):
        """-> (verdict, token or None). ``add_ack(token)`` registers a PUBACK slot on the current
        connection and returns the function that sends it in turn."""
        with self._lock:
            if self.paused:
                self.counters["shed"] += 1
                return SHED, None
            # an input held unanswered (or answered, PUBACK not sent) first, then one already
            # acked: mosquitto 2.0.11 sometimes ignores a PUBACK and resends after a reconnect
            token = (self._orphans.pop(key) or self._acked.pop(key)) if dup else None
            if token is not None:
                self.counters["adopted"] += 1
                token.ack_fn = add_ack(token)
                if token.answered:
                    token.ack_fn()
                return ADOPTED, token
            if self.limit is not None and self.held >= self.limit:
                self.paused = True
                self.counters["pauses"] += 1
                self.counters["shed"] += 1
                return PAUSE, None
            token = Token(self, key)
            token.ack_fn = add_ack(token)
            self.held += 1
            self.held_max = max(self.held_max, self.held)
            return TAKE, token

    def disconnected(self, pending: list[Token]) -> None:
        """The connection is gone: ``pending`` (tokens whose PUBACK was not sent) now wait for
        their redelivery on a later connection."""
        with self._lock:
            for token in pending:
                if token.ack_fn is None:
                    continue                       # already orphaned
                token.ack_fn = None
                self._orphans.add(token)

    def connected(self) -> None:
        """A new connection: take deliveries again.

        An answered input waits for its redelivery across reconnects: a connection may pause
        again before the broker got round to resending everything. Past ``max_orphans`` the
        oldest answered ones are forgotten (their PUBACK reached the broker after all, or the
        session expired): at worst such an input runs again if it does come back."""
        with self._lock:
            self.paused = self._resuming = False
            answered = [t for t in self._orphans.tokens() if t.answered]
            for token in answered[:max(0, len(answered) - self.max_orphans)]:
                self._orphans.remove(token)

    def sent(self, token: Token) -> None:
        """Its PUBACK went to paho: remember it a while, in case the broker resends it anyway."""
        with self._lock:
            self._acked.add(token)
            if len(self._acked) > self.max_orphans:
                self._acked.remove(self._acked.oldest())

    # -- the application's threads ---------------------------------------------------------------
    def _answer(self, token: Token) -> None:
        with self._lock:
            if token.answered:
                return
            token.answered = True
            self.held -= 1
            ack = token.ack_fn
            resume = self.paused and not self._resuming and self.held <= self.resume_at
            if resume:
                self._resuming = True
            if ack is not None:
                ack()        # under the lock: a disconnect cannot orphan it halfway
        if resume and self.on_resume is not None:
            self.on_resume()

    def stats(self) -> dict:
        with self._lock:
            return {"held": self.held, "held_max": self.held_max, "held_limit": self.limit,
                    "paused": self.paused, "orphans": len(self._orphans), "acked_kept": len(self._acked),
                    **self.counters}


class _Index:
    """Tokens by key, oldest first; ``pop(key)`` takes the oldest with that key."""

    def __init__(self):
        self._by_key: dict[tuple, deque[Token]] = {}
        self._order: dict[Token, None] = {}      # insertion-ordered set
        self._count = 0

    def add(self, token: Token) -> None:
        self._count += 1
        token.seq = self._count
        self._by_key.setdefault(token.key, deque()).append(token)
        self._order[token] = None

    def pop(self, key: tuple) -> Token | None:
        queue = self._by_key.get(key)
        if not queue:
            return None
        token = queue[0]
        self.remove(token)
        return token

    def remove(self, token: Token) -> None:
        queue = self._by_key[token.key]
        queue.remove(token)
        if not queue:
            del self._by_key[token.key]
        del self._order[token]

    def oldest(self) -> Token:
        return next(iter(self._order))

    def tokens(self) -> list[Token]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)


class AckWindow:
    """In-order PUBACKs for one connection: ``add`` a delivery as it arrives, call what it returns
    when it is done; ``send`` gets the mids whose turn has come (the done prefix, in arrival
    order). ``reset`` on every (re)connect."""

    def __init__(self, send: Callable[[int], None], on_sent: Callable | None = None):
        self._send = send
        self._on_sent = on_sent             # on_sent(token) after a token's PUBACK went out
        self._lock = threading.Lock()
        self._pending: deque[list] = deque()      # [mid, done], in arrival order
        self.generation = 0

    def add(self, mid: int, token=None) -> Callable[[], None]:
        entry = [mid, False, token]
        with self._lock:
            self._pending.append(entry)
            gen = self.generation
        return lambda: self._ack(entry, gen)

    def _ack(self, entry: list, gen: int) -> None:
        with self._lock:
            if gen != self.generation or entry[1]:
                return           # from before a reconnect (the broker resends it) or acked twice
            entry[1] = True
            while self._pending and self._pending[0][1]:
                # under the lock, so two threads cannot reorder their PUBACKs
                mid, _, token = self._pending.popleft()
                self._send(mid)
                if token is not None and self._on_sent is not None:
                    self._on_sent(token)

    def reset(self) -> int:
        """A new connection: forget what the old one delivered (it will be redelivered)."""
        return len(self.reset_pending(all_entries=True))

    def reset_pending(self, *, all_entries: bool = False) -> list:
        """``reset``, returning the tokens given to ``add`` of the deliveries not yet acked."""
        with self._lock:
            tokens = [entry[2] for entry in self._pending if all_entries or entry[2] is not None]
            self._pending.clear()
            self.generation += 1
        return tokens

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class InputFlow:
    """The acting half of input flow control, mixed into ``mqtt.MqttClient``: every QoS 1
    delivery goes through the gate (``_take``), a full gate closes the connection (``_pause``)
    and an answered backlog reopens it (``_resume``). Uses the client's ``_client`` (paho),
    ``protocol``, ``_receive_maximum``, ``_run_lock``, ``_stopped``, ``_start_loop()``,
    ``_hooks`` and ``_call``."""

    def _init_inflow(self, manual_ack: bool, max_held: int | None) -> None:
        # the client-side bound on inputs held unanswered (the module docstring says why)
        self.gate = InputGate(max_held, on_resume=self._resume_soon) if manual_ack else None
        self.acks = AckWindow(self._send_ack, on_sent=self.gate.sent) if manual_ack else None
        self.over_receive_max = 0       # deliveries past our Receive Maximum (a broker bug; counted)

    def _take(self, message: Message) -> tuple[Message | None, Callable[[], None] | None]:
        """Paho's thread: (the message to hand over, its ack function) -- (None, None) when the
        gate does not take it; the ack function is None when acks are not manual."""
        if self.acks is None or message.qos != 1:
            return message, None
        acker = self._admit(message)
        if acker is None:
            return None, None  # not taken (paused), or a redelivery of an input already held
        return dataclasses.replace(message, _acker=acker), acker

    def _admit(self, message: Message) -> Callable[[], None] | None:
        """The input gate's verdict on a QoS 1 delivery; the ack function if taken."""
        key = input_key(message.topic, message.payload, message.response_topic, message.correlation)
        verdict, token = self.gate.admit(key, message.dup, lambda t: self.acks.add(message.mid, t))
        if verdict == PAUSE:
            self._pause()
        if verdict != TAKE:
            return None
        if self.protocol == "5" and self._receive_maximum and len(self.acks) > self._receive_maximum:
            # mosquitto 2.0.11 releases more than one send slot per in-order PUBACK
            # (eclipse-mosquitto/mosquitto#2301); counted, and bounded by the gate instead.
            self.over_receive_max += 1
        return token.answer

    def _pause(self) -> None:
        """Paho's thread: the gate is full. Close the input connection (the broker keeps what we
        did not take); ``_resume`` reconnects once the daemon has caught up."""
        stats = self.gate.stats()
        # info, not warning: under a long backlog this is routine, once per half-bound of inputs;
        # the input_paused event (rate-limited by Telemetry) and inputs_pauses are what to watch
        log.info("MQTT inputs paused: %d held unanswered (limit %d); reconnecting at %d",
                 stats["held"], self.gate.limit, self.gate.resume_at)
        self.gate.disconnected(self.acks.reset_pending())    # no PUBACK on a link we are closing
        try:
            self._client.disconnect()       # paho's thread ends after sending DISCONNECT
        except (OSError, ValueError):
            pass
        self._call(self._hooks[3], {"event": "input_paused", "held": stats["held"], "limit": self.gate.limit,
                                    "resume_at": self.gate.resume_at, "pauses": stats["pauses"]})

    def _resume_soon(self) -> None:
        # Called by whoever answered the input (maybe paho's own thread): join and restart the
        # network thread from a thread of our own.
        threading.Thread(target=self._resume, name="mqtt-input-resume", daemon=True).start()

    def _resume(self) -> None:
        with self._run_lock:
            if self._stopped:
                return
            self._client.loop_stop()        # the thread our DISCONNECT ended
            try:
                self._start_loop()
            except BrokerError as exc:
                log.error("MQTT inputs cannot reconnect: %s", exc.message)

    def _send_ack(self, mid: int) -> None:
        self._client.ack(mid, 1)

    def _inputs_reconnected(self) -> None:
        """A new connection (CONNACK 0): unacked inputs wait for their redelivery."""
        if self.acks is not None:
            self.gate.disconnected(self.acks.reset_pending())
            self.gate.connected()

    def _inputs_disconnected(self) -> None:
        """The link is gone (or being replaced): answers from now on wait for their redelivery."""
        if self.acks is not None:
            self.gate.disconnected(self.acks.reset_pending())
