"""The health check's broker probe: one MQTT 5 CONNECT to the daemon's own broker, and its answer.
Like telemetry's ``mqtt_version = "auto"``, a broker that refuses MQTT 5 (CONNACK 0x01, or a
close without CONNACK) is asked once more in MQTT 3.1.1 (NATS, RabbitMQ < 3.13; issue 11).

The daemon's telemetry talks to this broker through paho; the probe asks the same question with a
few bytes over a plain socket (stdlib ``socket`` and ``ssl`` only), so ``firmware validate`` runs
on a device or a host without paho. It connects the way telemetry does: the same URL parser
(``mqtt://`` port 1883, ``mqtts://`` port 8883), the same TLS rules (verify the server against the
CA file or the system store, check its host name, present a client certificate), the same
credentials (an explicit user name wins over the URL's). The failures are told apart, since each
points somewhere else:

    firmware.broker           nothing answered (refused port, timeout, DNS) or no CONNACK came back
    firmware.broker_tls       the TLS handshake failed (wrong CA, no client certificate)
    firmware.broker_auth      CONNACK refused the credentials ('bad user name or password',
                              'not authorized', 'banned'); the reason code is named
    firmware.broker_refused   any other CONNACK refusal ('server unavailable', 'server busy', ...)
"""
from __future__ import annotations

import socket
import ssl
from pathlib import Path

from edge.telemetry.config import parse_broker_url
from firmware.errors import HealthCheckError


def broker_address(broker: str):
    """``mqtt://``/``mqtts://`` URL (default ports 1883/8883) or the older ``host[:port]`` (plain
    MQTT) -> ``edge.telemetry.config.BrokerUrl``; UsageError when it cannot be read.

    One parser for the whole project (it reads the short forms too)."""
    return parse_broker_url(broker.strip() if isinstance(broker, str) else broker)


def tls_context(tls: dict | None) -> ssl.SSLContext:
    """What ``edge.telemetry.mqtt`` asks of paho: verify the server (``ca_file``, else the system
    store), check its host name, and present ``cert_file``/``key_file`` when given."""
    tls = tls or {}
    where = tls.get("ca_file") or tls.get("cert_file") or "broker TLS"
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.get("ca_file"))
        if tls.get("cert_file"):
            context.load_cert_chain(tls["cert_file"], tls.get("key_file"))
    except (OSError, ValueError) as exc:                   # ssl.SSLError is an OSError
        raise HealthCheckError(f"cannot set up TLS for the broker check: {exc}", where=str(where),
                               code="firmware.broker_tls",
                               hint="check ca_file / cert_file / key_file exist and are PEM") from None
    return context


# MQTT 5 CONNACK reason codes a broker may refuse a CONNECT with (MQTT 5.0 section 3.2.2.2), and
# the MQTT 3.1.1 return codes (section 3.2.2.3) for a broker that answers in the older protocol.
CONNACK_REASONS = {
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8C: "bad authentication method",
    0x90: "topic name invalid", 0x95: "packet too large", 0x97: "quota exceeded",
    0x99: "payload format invalid", 0x9A: "retain not supported", 0x9B: "QoS not supported",
    0x9C: "use another server", 0x9D: "server moved", 0x9F: "connection rate exceeded"}
CONNACK_V311 = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
                4: "bad user name or password", 5: "not authorized"}
AUTH_REASONS = {0x86, 0x87, 0x8A, 0x8C}     # the broker turned *these credentials* away


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _connect_packet(username: str | None = None, password: str | None = None, level: int = 5) -> bytes:
    """CONNECT at protocol ``level`` (5 = MQTT 5, what telemetry tries first; 4 = 3.1.1), clean
    start, keepalive 10 s, no properties, client id "ganglion-validate", and the daemon's user name
    / password when it has them."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    props = b"\x00" if level == 5 else b""             # 3.1.1 has no properties field
    body = _utf8("MQTT") + bytes([level, flags]) + (10).to_bytes(2, "big") + props + _utf8("ganglion-validate")
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _utf8(password)
    return b"\x10" + _varint(len(body)) + body


def _recv_exact(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:         # a TLS record may hand over the CONNACK in pieces
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_connack(sock) -> tuple[int, int] | None:
    """(packet type byte, reason code) of the broker's first packet, or None if it hung up."""
    head = _recv_exact(sock, 1)
    length, shift = 0, 0
    for _ in range(4):              # the remaining length: a variable byte integer
        byte = _recv_exact(sock, 1)
        if not byte or not head:
            return None
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = _recv_exact(sock, min(length, 1 << 16))
    if len(body) < 2:
        return None
    return head[0], body[1]


def _credentials(url, auth: dict | None) -> tuple[str | None, str | None]:
    """Telemetry's rule (``edge.telemetry.mqtt``): an explicit user name wins over the URL's, and
    the password falls back to the URL's."""
    auth = auth or {}
    user = auth.get("username") if auth.get("username") is not None else url.username
    password = auth.get("password") if auth.get("password") is not None else url.password
    return user, (password if user is not None or password is not None else None)


def _refusal(url, reason_code: int, user: str | None) -> HealthCheckError:
    """A CONNACK that is not success -> an error naming the reason, credentials apart from the rest."""
    name = CONNACK_REASONS.get(reason_code) or CONNACK_V311.get(reason_code) or "unknown reason"
    said = f"CONNACK reason 0x{reason_code:02x} '{name}'"
    if reason_code in AUTH_REASONS or reason_code in (4, 5):
        who = f"user {user!r}" if user is not None else "no user name or password"
        return HealthCheckError(f"broker {url} refused the credentials ({who}): {said}", where=str(url),
                                code="firmware.broker_auth",
                                hint="check [telemetry] username/password (or --broker-username / "
                                     "--broker-password) against the broker's password file and ACL")
    return HealthCheckError(f"broker {url} refused the connection: {said}", where=str(url),
                            code="firmware.broker_refused")


def check_broker(slot: Path, ctx: dict) -> str:
    """The daemon's broker answers a CONNECT. With a failover list (``broker_urls``) the first that
    answers passes the check; an unreachable broker moves on to the next, while a refusal (TLS,
    credentials) is judged at once -- every broker of a list is meant to take the same login."""
    url = ctx.get("broker_url") or (broker_address(ctx["broker"]) if ctx.get("broker") else None)
    urls = ctx.get("broker_urls") or ([url] if url is not None else [])
    if not urls:
        return "skipped"
    unreachable = []
    for url in urls:
        try:
            answer = _check_one(url, ctx)
        except HealthCheckError as exc:
            if exc.code != "firmware.broker" or len(urls) == 1:
                raise
            unreachable.append(exc.message)
            continue
        return f"{answer} ({url}, after {len(unreachable)} unreachable)" if unreachable else answer
    raise HealthCheckError("no broker of the list answered: " + "; ".join(unreachable), where=str(urls[0]),
                           code="firmware.broker")


def _check_one(url, ctx: dict) -> str:
    context = tls_context(ctx.get("broker_tls")) if url.tls else None
    user, password = _credentials(url, ctx.get("broker_auth"))
    level = 5
    reply = _exchange(url, context, _connect_packet(user, password, level))
    if reply is None or (reply[0] == 0x20 and reply[1] == 0x01):
        # no MQTT 5 here: 0x01 is 3.1.1's "unacceptable protocol version" (section 3.2.2.3)
        try:
            reply, level = _exchange(url, context, _connect_packet(user, password, 4)), 4
        except HealthCheckError as exc:
            if exc.code != "firmware.broker":
                raise
            # the second dial itself failed: report what the MQTT 5 attempt got
    if reply is None or reply[0] != 0x20:
        got = "it closed the connection" if reply is None else f"packet type 0x{reply[0]:02x}"
        raise HealthCheckError(f"broker {url} did not answer CONNECT with CONNACK ({got})", where=str(url),
                               code="firmware.broker")
    if reply[1] != 0:
        raise _refusal(url, reply[1], user)
    login = f" as {user!r}" if user is not None else ""
    login += " (MQTT 3.1.1)" if level == 4 else ""
    return f"broker answered CONNACK{login} over TLS" if url.tls else f"broker answered CONNACK{login}"


def _exchange(url, context, packet: bytes) -> tuple[int, int] | None:
    """One CONNECT -> the broker's first packet (type, code), None if it hung up first."""
    try:
        with socket.create_connection((url.host, url.port), timeout=5) as raw:
            sock = context.wrap_socket(raw, server_hostname=url.host) if context else raw
            with sock:
                sock.sendall(packet)
                reply = _read_connack(sock)
                if reply and reply[1] == 0:
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                return reply
    except ssl.SSLError as exc:
        raise HealthCheckError(f"TLS handshake with broker {url} failed: {exc}", where=str(url),
                               code="firmware.broker_tls",
                               hint="check the CA file (ca_file / --broker-ca) and the client certificate") from None
    except (OSError, ValueError) as exc:
        raise HealthCheckError(f"broker {url} not reachable: {exc}", where=str(url), code="firmware.broker")
