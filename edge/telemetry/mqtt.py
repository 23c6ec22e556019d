"""The one module in ``edge/`` that imports paho: a small MQTT 5 adapter over paho-mqtt 2.x.

paho's ``Client`` mixes return codes, exceptions and callbacks; this adapter gives the rest of
Ganglion a narrow surface and our own exceptions:

    MqttClient(url, client_id=..., keepalive=..., will=Will(...), tls/credentials ...)
      .start()                         connect in the background; reconnects with backoff forever
      .connect(timeout)                start() and wait for CONNACK (+ SUBACK), or raise BrokerError
      .publish(topic, payload, ...)    -> mid; QoS 1 PUBACKs arrive through ``on_publish(mid, ok)``
      .publish_wait(...)               publish and block until the broker acknowledged it
      .subscribe(filter, callback)     callback(Message); re-subscribed after every reconnect
      .stop()                          clean disconnect (the Last Will is NOT sent)

Manual acknowledgement (``manual_ack=True``, for input topics; inflow.py, ``InputFlow`` mixed in
here): a QoS 1 message is PUBACKed, in arrival order, when the application calls ``message.ack()``.
``receive_maximum`` asks the broker for backpressure; what bounds memory is ``max_held``: at that
many inputs held unanswered the client closes its connection -- the broker keeps the rest -- and
reconnects once the application has answered half of them (``on_flow`` reports each pause).

Protocol version (``mqtt_version``, issue 11): ``"5"``, ``"3.1.1"`` or ``"auto"`` (default).
Auto speaks MQTT 5 first and falls back to 3.1.1 -- for the life of this client -- when the broker
refuses it: a CONNACK with return code 0x01 "unacceptable protocol version" (paho reports it as
reason 0x84, MQTT 3.1.1 section 3.2.2.3; NATS and RabbitMQ < 3.13 do this), or two connection
attempts in a row closed without any CONNACK. The switch happens before the first successful
connection, when paho holds nothing of ours, by building a fresh paho client. Under 3.1.1 there
are no properties: ``publish`` drops response topic and correlation (callers carry them in the
JSON envelope: commands.py, requester.py), there is no Receive Maximum (``max_held`` alone bounds
the inputs) and a session expiry becomes ``clean_session=False`` -- a session the broker keeps
until ``drop_session`` clears it. The first successful connection logs one line and calls
``on_protocol({"event": "mqtt_protocol", "version", "requested", "reason"})``.

Failover and the 3.1.1 fallback (``url`` may be a list of brokers): failover.py decides and
rebuilds the paho client (``Switching``, mixed in here); ``url`` is the broker in use now.

Reconnects: paho's network thread retries with a doubling delay between ``reconnect_min`` and
``reconnect_max``. QoS 1 messages that were in flight when the link dropped stay in paho's memory
and are re-sent on reconnect (with DUP); ``on_connect``/``on_disconnect`` let the publisher know.
Callbacks run on paho's network thread and must be quick; an exception in one is logged, never
allowed to kill that thread.
"""
from __future__ import annotations

import logging
import ssl
import threading
from typing import Callable, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import MqttVersion, values
from core.errors import UsageError
from edge.telemetry.config import BrokerUrl
from edge.telemetry.errors import BrokerError, PublishError
from edge.telemetry.failover import FAILBACK_S, BrokerList, Switching
from edge.telemetry.inflow import AckWindow, InputFlow  # noqa: F401 - AckWindow is API here too
from edge.telemetry.message import Message, Will  # noqa: F401 - API of this module too

log = logging.getLogger("ganglion.telemetry.mqtt")
MQTT_VERSIONS = values(MqttVersion)
# paho turns a CONNACK return code 0x01 read by an MQTT 5 client into this MQTT 5 reason code
UNSUPPORTED_PROTOCOL = 0x84
# a refused subscription is asked for again, the delay doubling: NATS refuses QoS 1 subscriptions
# (SUBACK 0x80) for a while after a node of its cluster died, until JetStream has its quorum back
RESUBSCRIBE_MIN, RESUBSCRIBE_MAX = 1.0, 10.0
CLOSES_BEFORE_FALLBACK = 2      # attempts closed without a CONNACK, in a row, before auto tries 3.1.1


def check_mqtt_version(version: str, where: str = "mqtt_version") -> str:
    if version not in MQTT_VERSIONS:
        raise UsageError(f"unknown MQTT version {version!r}", where=where, code="usage.mqtt_version",
                         hint="one of: auto (MQTT 5, else 3.1.1), 5, 3.1.1")
    return version


class MqttClient(Switching, InputFlow):
    def __init__(self, url: BrokerUrl | Sequence[BrokerUrl], *, client_id: str, keepalive: int = 30,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 will: Will | None = None, reconnect_min: float = 0.5, reconnect_max: float = 30.0,
                 session_expiry: int = 0, manual_ack: bool = False, receive_maximum: int | None = None,
                 max_held: int | None = None, mqtt_version: str = "auto", failback_s: float = FAILBACK_S,
                 on_connect: Callable[[], None] | None = None,
                 on_disconnect: Callable[[str], None] | None = None,
                 on_publish: Callable[[int, bool], None] | None = None,
                 on_flow: Callable[[dict], None] | None = None,
                 on_protocol: Callable[[dict], None] | None = None,
                 on_switch: Callable[[dict], None] | None = None):
        self.brokers = BrokerList([url] if isinstance(url, BrokerUrl) else list(url), failback_s=failback_s)
        url = self.brokers.current
        self._switching = False         # a rebuild (failover, failback, 3.1.1 fallback) is under way
        self._halt = threading.Event()  # stops the failback checks
        self.mqtt_version = check_mqtt_version(mqtt_version)
        self.protocol = "3.1.1" if mqtt_version == "3.1.1" else "5"     # what this client speaks now
        self._fallback_reason: str | None = None
        self._closes_without_connack = 0
        self._connack_seen = False
        self.negotiated: dict | None = None      # the on_protocol event, once connected
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._receive_maximum = receive_maximum
        self._init_inflow(manual_ack, max_held)          # gate, acks, over_receive_max
        self._hooks = (on_connect, on_disconnect, on_publish, on_flow, on_protocol, on_switch)
        self._run_lock = threading.Lock()      # start/stop vs. a resume after a pause
        self._stopped = False
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[int, Callable[[Message], None]]] = {}
        self.last_error: str | None = None
        self._paho_args = dict(client_id=client_id, manual_ack=manual_ack, reconnect=(reconnect_min, reconnect_max),
                               user=username if username is not None else url.username,
                               password=password if password is not None else url.password,
                               tls=(ca_file, cert_file, key_file), will=will)
        self._suback_mid: int | None = None
        self._sub_mids: dict[int, list[str]] = {}     # SUBSCRIBE mid -> its filters, until the SUBACK
        self._resub_delay = RESUBSCRIBE_MIN
        self._granted: set[str] = set()                # filters the broker granted on this connection
        self._granted_cond = threading.Condition()
        self._client = self._make_paho()

    def _make_paho(self) -> paho.Client:
        """A paho client for ``self.protocol``, with every setting of this adapter (built again
        when auto falls back to 3.1.1: paho fixes the protocol at construction)."""
        a = self._paho_args
        v5 = self.protocol == "5"
        extra = {} if v5 else {"clean_session": not self._session_expiry}    # 3.1.1: no expiry, a flag
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=a["client_id"],
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311, reconnect_on_failure=True,
                             manual_ack=a["manual_ack"], **extra)
        client.suppress_exceptions = True
        client.max_inflight_messages_set(0)      # the publisher's own window governs in-flight
        client.reconnect_delay_set(*a["reconnect"])
        if a["user"] is not None:
            client.username_pw_set(a["user"], a["password"])
        if self.url.tls:
            self._set_tls(client, *a["tls"])
        if a["will"] is not None:
            will = a["will"]
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    @property
    def url(self) -> BrokerUrl:
        """The broker in use now (the list's current one)."""
        return self.brokers.current

    def _set_tls(self, client, ca_file, cert_file, key_file) -> None:
        try:
            client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                                 cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise BrokerError(f"cannot set up TLS: {exc}", where=str(self.url), code="telemetry.tls",
                              hint="check ca_file / cert_file / key_file exist and are PEM") from None

    # -- connection -------------------------------------------------------------------------
    def _connect_args(self) -> dict:
        # MQTT 3.1.1 has no Receive Maximum: the InputGate (max_held) is the only bound there
        if self.protocol != "5":        # 3.1.1: clean_session was given to paho.Client, no properties
            return dict(host=self.url.host, port=self.url.port, keepalive=self._keepalive)
        props = Properties(PacketTypes.CONNECT)
        if self._session_expiry:
            props.SessionExpiryInterval = self._session_expiry
        if self._receive_maximum:
            props.ReceiveMaximum = self._receive_maximum
        return dict(host=self.url.host, port=self.url.port, keepalive=self._keepalive,
                    clean_start=not self._session_expiry, properties=props)

    def start(self) -> None:
        """Connect in the background (a device must come up with its broker down); paho's thread
        keeps reconnecting until ``stop()``."""
        with self._run_lock:
            self._stopped = False
            self._start_loop()
        self._start_failback()

    def _start_loop(self) -> None:
        try:
            self._client.connect_async(**self._connect_args())
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot connect to {self.url}: {exc}", where=str(self.url)) from None
        self._client.loop_start()

    def connect(self, timeout: float = 10.0) -> "MqttClient":
        """Connect now or raise BrokerError saying why (refused, TLS, auth) -- for tools and tests.
        With several brokers each is tried in order (``timeout`` each); the last one's error is
        raised, naming the others'. paho's thread takes over afterwards (reconnects, failover)."""
        problems = []
        for _ in self.brokers.urls:
            try:
                self._connect_current(timeout)
            except BrokerError as exc:
                problems.append(f"{self.url}: {exc.message}")
                if len(problems) == len(self.brokers.urls):
                    if len(problems) == 1:
                        raise
                    raise BrokerError("no broker of the list answered: " + "; ".join(problems),
                                      where=str(self.url), code=exc.code, hint=exc.hint) from None
                event = self.brokers.move_to((self.brokers.index + 1) % len(self.brokers.urls), exc.message)
                log.warning("MQTT broker %s -> %s: %s", event["from"], event["to"], event["reason"])
                self._stopped = False
                self._client = self._make_paho()
                continue
            self._start_failback()
            return self
        return self

    def _connect_current(self, timeout: float) -> None:
        """One synchronous connect to the current broker (its exception is ours to report)."""
        self._client.connect_timeout = timeout
        try:
            self._client.connect(**self._connect_args())
        except (OSError, ValueError) as exc:       # ssl.SSLError is an OSError
            tls = isinstance(exc, ssl.SSLError)
            raise BrokerError(f"cannot connect to {self.url}: {exc}", where=str(self.url),
                              code="telemetry.tls" if tls else "telemetry.broker",
                              hint="check the CA file and that the broker's certificate names this host"
                              if tls else "is the broker running and the URL right?") from None
        self._client.loop_start()
        if not self.wait_connected(timeout):
            self.stop()
            refused_v5 = self.protocol == "5" and "unsupported protocol version" in (self.last_error or "").lower()
            raise BrokerError(f"no connection to {self.url} within {timeout:g}s"
                              + (f" ({self.last_error})" if self.last_error else ""),
                              where=str(self.url),
                              hint="the broker does not speak MQTT 5: use --mqtt-version auto or 3.1.1"
                              if refused_v5 else "check the credentials and the broker's log")

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def wait_granted(self, topic_filter: str, timeout: float) -> bool:
        """True once the broker granted ``topic_filter`` on the current connection (a refused
        subscription is asked for again in the background)."""
        with self._granted_cond:
            return self._granted_cond.wait_for(lambda: topic_filter in self._granted, timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop the network thread."""
        self._halt.set()
        with self._run_lock:
            self._stopped = True
            self._connected.clear()
            try:
                self._client.disconnect()
            except (OSError, ValueError):
                pass
            self._client.loop_stop()

    # -- publish ----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                response_topic: str | None = None, correlation: bytes | None = None) -> int:
        """Hand a message to paho; returns its mid. While disconnected paho keeps it and sends it
        after the reconnect, so only hard refusals raise (bad topic, too large, queue full)."""
        return self._publish(topic, payload, qos, retain, response_topic, correlation).mid

    def _publish(self, topic, payload, qos, retain, response_topic, correlation):
        props = None
        # MQTT 3.1.1 has no properties: the caller carries reply-to and correlation in its JSON
        if self.protocol == "5" and (response_topic is not None or correlation is not None):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, TypeError) as exc:
            raise PublishError(f"cannot publish: {exc}", where=topic) from None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"publish refused: {paho.error_string(info.rc)}", where=topic)
        return info

    def publish_wait(self, topic: str, payload: bytes, *, timeout: float = 10.0, retain: bool = False,
                     response_topic: str | None = None, correlation: bytes | None = None) -> None:
        """Publish with QoS 1 and block until the broker's PUBACK, or raise PublishError."""
        info = self._publish(topic, payload, 1, retain, response_topic, correlation)
        try:
            info.wait_for_publish(timeout)
        except RuntimeError as exc:
            raise PublishError(f"publish failed: {exc}", where=topic) from None
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge within {timeout:g}s", where=topic,
                               hint="is the broker reachable?")

    # -- subscribe --------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, callback: Callable[[Message], None], qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``callback``; survives reconnects."""
        with self._lock:
            self._subs[topic_filter] = (qos, callback)
        if self.connected:
            rc, mid = self._client.subscribe(topic_filter, qos=qos)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._sub_mids[mid] = [topic_filter]

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
        if self.connected:
            self._client.unsubscribe(topic_filter)

    # -- paho callbacks (network thread) ----------------------------------------------------
    def _on_pre_connect(self, client, userdata) -> None:
        self._connack_seen = False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return                      # the paho client auto replaced (fallback to 3.1.1)
        self._connack_seen = True
        self._closes_without_connack = 0
        if reason_code.is_failure:
            self.last_error = f"broker refused: {reason_code}"
            if self._may_fall_back() and reason_code.value == UNSUPPORTED_PROTOCOL:
                self._fall_back("the broker refused MQTT 5 (CONNACK 0x01, unsupported protocol version)")
                return
            log.warning("MQTT connect to %s refused: %s", self.url, reason_code)
            self._attempt_failed(f"CONNACK {reason_code}")
            return
        self.brokers.connected()
        if self.negotiated is None:
            self._announce_protocol()
        self._inputs_reconnected()
        with self._lock:
            subs = [(f, q) for f, (q, _) in self._subs.items()]
        if not subs:
            self._ready()
            return
        # "connected" means subscribed too: until the SUBACK, a command sent to us would be lost.
        self._sub_mids.clear()
        with self._granted_cond:
            self._granted.clear()
        rc, mid = client.subscribe(subs)
        self._suback_mid = mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None
        self._sub_mids[mid] = [f for f, _ in subs]

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if client is not self._client:
            return
        filters = self._sub_mids.pop(mid, [])
        refused = [(f, str(rc)) for f, rc in zip(filters, reason_codes) if rc.is_failure]
        if refused:
            log.warning("broker refused subscription(s) %s; asking again in %gs",
                        ", ".join(f"{f} ({rc})" for f, rc in refused), self._resub_delay)
            timer = threading.Timer(self._resub_delay, self._resubscribe, args=(client, [f for f, _ in refused]))
            timer.daemon = True
            timer.start()
            self._resub_delay = min(2 * self._resub_delay, RESUBSCRIBE_MAX)
        elif filters:
            self._resub_delay = RESUBSCRIBE_MIN
        with self._granted_cond:
            self._granted.update(f for f, rc in zip(filters, reason_codes) if not rc.is_failure)
            self._granted_cond.notify_all()
        if mid == self._suback_mid:
            self._suback_mid = None
            self._ready()

    def _resubscribe(self, client, filters: list[str]) -> None:
        """A timer's thread: subscribe again to filters the broker refused (same connection only)."""
        if client is not self._client or not self.connected:
            return                  # a new connection subscribes to everything anyway
        with self._lock:
            subs = [(f, self._subs[f][0]) for f in filters if f in self._subs]
        if subs:
            rc, mid = client.subscribe(subs)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._sub_mids[mid] = [f for f, _ in subs]

    def _ready(self) -> None:
        self._connected.set()
        self._call(self._hooks[0])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        if not self._connack_seen and self._may_fall_back():
            # a broker that does not know MQTT 5 may just hang up; twice in a row is not a glitch
            self._closes_without_connack += 1
            if self._closes_without_connack >= CLOSES_BEFORE_FALLBACK:
                self._fall_back(f"the broker closed {self._closes_without_connack} MQTT 5 connection "
                                f"attempts without a CONNACK")
        elif not self._connack_seen and not self._stopped:
            self._attempt_failed("closed before a CONNACK")
        was = self._connected.is_set()
        self._connected.clear()
        self._inputs_disconnected()
        if was:       # otherwise keep the reason the CONNACK gave (e.g. not authorized)
            self.last_error = f"disconnected: {reason_code}"
            self._call(self._hooks[1], str(reason_code))

    def _on_connect_fail(self, client, userdata) -> None:
        if client is self._client:
            self._attempt_failed("no connection")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if client is not self._client:
            return          # a PUBACK of a client replaced by a failover: its records are re-sent
        # MQTT 5 PUBACK reason codes >= 0x80 are refusals; "no matching subscribers" (0x10) is fine.
        self._call(self._hooks[2], mid, not reason_code.is_failure)

    def _on_message(self, client, userdata, msg) -> None:
        if client is not self._client:
            return          # a client being replaced: the broker keeps what it did not see acked
        props = getattr(msg, "properties", None)
        message = Message(topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
                          response_topic=getattr(props, "ResponseTopic", None),
                          correlation=getattr(props, "CorrelationData", None),
                          mid=msg.mid, dup=bool(msg.dup))
        message, acker = self._take(message)
        if message is None:
            return             # not taken (paused), or a redelivery of an input already held
        with self._lock:
            targets = [cb for f, (_, cb) in self._subs.items() if paho.topic_matches_sub(f, msg.topic)]
        if not targets and acker is not None:
            # A subscription left in the persistent session by an older configuration: nobody
            # will ever ack it, and holding it would block every later PUBACK (they go in order).
            log.warning("no handler for %s (a subscription from an earlier run?): acknowledged, dropped",
                        msg.topic)
            acker()
        for callback in targets:
            if not self._call(callback, message) and acker is not None:
                acker()          # the handler failed: it will not ack, and later PUBACKs wait on this one

    @staticmethod
    def _call(fn, *args) -> bool:
        if fn is None:
            return True
        try:
            fn(*args)
        except Exception:   # a bug in one handler must not stop paho's network thread
            log.exception("MQTT callback %r failed", fn)
            return False
        return True


def drop_session(url: BrokerUrl, client_id: str, *, mqtt_version: str = "auto", timeout: float = 10.0,
                 **login) -> str:
    """Clear the broker's persistent session of ``client_id`` (e.g. ``ganglion-cam1-in`` of a
    retired device): connect once with a clean session and leave. Under MQTT 3.1.1 nothing else
    ever clears it (no Session Expiry), so this is the documented clean-up. Returns the protocol
    used. The device must be stopped: a second connection with its id takes its session over."""
    client = MqttClient(url, client_id=client_id, mqtt_version=mqtt_version, **login)
    client.connect(timeout)
    client.stop()
    return client.protocol
