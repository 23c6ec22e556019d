"""Telemetry settings: the broker URL parser and the frozen ``TelemetryConfig``.

A broker is named by one URL, ``mqtt://host:port`` (plain TCP, default port 1883) or
``mqtts://host:port`` (TLS, default port 8883); credentials may ride in the URL
(``mqtt://user:pass@host``) or come from the config. The short form ``host[:port]`` (IPv6 in
brackets: ``[::1]:1883``) means plain MQTT; ``str(BrokerUrl)`` is always the URL form, and
parses back to the same address. ``TelemetryConfig`` (a ``core.config.Schema``) is the
``[telemetry]`` table of the daemon's TOML; ``from_dict`` refuses unknown keys, so a typo is an
error instead of a silently ignored setting, and reports every problem at once.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator

from core.config import MqttVersion, Paths, Rules, Schema, SpoolSync, load
from core.errors import UsageError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# A device id becomes one MQTT topic level on every broker a fleet may use: no wildcards ('+',
# '#'), no separator ('/'), and no '.' or ' ' either -- NATS maps '/' to '.' and closes the
# connection on a topic level holding either, RabbitMQ misroutes '.' (FACTS.md, issue 11).
DEVICE_ID_MAX = 64
DEVICE_ID_CHARS = "A-Z a-z 0-9 _ -, starting with a letter or digit"
DEVICE_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{DEVICE_ID_MAX - 1}}}")     # fullmatch
_ID_CHAR_RE = re.compile(r"[A-Za-z0-9_-]")


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        # an IPv6 address goes in brackets, its zone (fe80::1%eth0) escaped as in RFC 6874
        host = f"[{self.host.replace('%', '%25')}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def broker_urls(spec) -> list[BrokerUrl]:
    """One broker address or a failover list of them (in order of preference) -> BrokerUrls."""
    return [parse_broker_url(b) for b in ([spec] if isinstance(spec, str) else spec)]


def parse_broker_url(url: str) -> BrokerUrl:
    """A broker address -> BrokerUrl; UsageError (code ``usage.broker_url``) naming what is wrong.

    URL form: ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...`` (default ports 1883/8883).
    Short form, plain MQTT: ``host``, ``host:port``, ``[v6addr]``, ``[v6addr]:port`` or ``:port``
    (this machine). An IPv6 address takes brackets whenever a port may follow, as in URLs."""
    if not isinstance(url, str) or not url.strip():
        raise _bad(f"not a broker address: {url!r}", "--broker")
    text = url.strip()
    if "://" not in text:
        if any(c in text for c in "@/?#"):
            raise _bad("a short broker address is HOST[:PORT]; credentials and paths need the URL form", text)
        host, port = _host_port(text, DEFAULT_PORTS["mqtt"], text, url_form=False)
        return BrokerUrl(host=host or "127.0.0.1", port=port, tls=False)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _bad(f"unsupported broker scheme {parts.scheme!r}", text)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad("a broker URL holds only a host and a port", text)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host, port = _host_port(hostport, DEFAULT_PORTS[scheme], text, url_form=True)
    if not host:
        raise _bad("the broker URL names no host", text)
    return BrokerUrl(host=host, port=port, tls=scheme == "mqtts",
                     username=unquote(parts.username) if userinfo and parts.username else None,
                     password=unquote(parts.password) if userinfo and parts.password else None)


def _host_port(text: str, default_port: int, where: str, *, url_form: bool) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` -> (host, port). The host is checked
    only for what would make the address ambiguous; the resolver judges the rest. In a URL an
    IPv6 zone is written ``%25`` (RFC 6874): ``mqtt://[fe80::1%25eth0]:1883``."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _bad("an IPv6 address opened with '[' needs its ']'", where)
        try:
            host = str(ipaddress.IPv6Address(unquote(inside) if url_form else inside))
        except ValueError:
            raise _bad(f"not an IPv6 address: {inside!r}", where) from None
        if rest and not rest.startswith(":"):
            raise _bad(f"unexpected {rest!r} after the IPv6 address", where)
        return host, _port(rest[1:], default_port, where) if rest else default_port
    if text.count(":") > 1:
        raise _bad(f"an IPv6 address needs brackets: [{text}] or [{text}]:PORT", where)
    host, colon, port = text.partition(":")
    if any(c.isspace() for c in host) or "[" in host or "]" in host:
        raise _bad(f"not a host name: {host!r}", where)
    return host.lower(), _port(port, default_port, where) if colon else default_port


def _port(text: str, default_port: int, where: str) -> int:
    if text.isdigit() and text.isascii() and 1 <= int(text) <= 65535:
        return int(text)
    raise _bad(f"the broker port {text!r} is not a number in 1..65535", where)


def _bad(message: str, where: str) -> UsageError:
    return UsageError(message, where=where, code="usage.broker_url",
                      hint="write it as mqtt://HOST:PORT, mqtts://HOST:PORT or HOST:PORT ([IPv6]:PORT)")


def check_device_id(device_id: str, where: str = "device_id") -> str:
    """The one device id rule (config, ``ganglion run --device-id``, ``telemetry send/watch``):
    1-64 characters from ``A-Z a-z 0-9 _ -``, the first a letter or digit. UsageError
    ``usage.device_id`` names the first bad character (position and code point: a control
    character does not print)."""
    if isinstance(device_id, str) and DEVICE_ID_RE.fullmatch(device_id):
        return device_id
    hint = f"use 1-{DEVICE_ID_MAX} characters from {DEVICE_ID_CHARS} (it becomes one topic level on any MQTT broker)"
    if not isinstance(device_id, str) or not device_id:
        raise UsageError(f"invalid device id {device_id!r}: not a non-empty string", where=where, code="usage.device_id",
                         hint=hint)
    if len(device_id) > DEVICE_ID_MAX:
        raise UsageError(f"invalid device id {device_id[:20]!r}...: {len(device_id)} characters, at most "
                         f"{DEVICE_ID_MAX}", where=where, code="usage.device_id", hint=hint)
    for pos, char in enumerate(device_id):
        # a leading '-' would read as an option on the command line (ganglion telemetry send DEVICE)
        if not _ID_CHAR_RE.fullmatch(char) or (pos == 0 and char in "_-"):
            raise UsageError(f"invalid device id {device_id!r}: character {char!r} (U+{ord(char):04X}) at "
                             f"position {pos} is not allowed", where=where, code="usage.device_id", hint=hint)
    raise UsageError(f"invalid device id {device_id!r}", where=where, code="usage.device_id", hint=hint)


class TelemetryConfig(Schema):
    section: ClassVar = ("telemetry",)

    broker: str = "mqtt://127.0.0.1:1883"
    # failover list in order of preference (failover.py); when set, broker is its first entry
    brokers: Paths = ()
    broker_failback_s: float = 30.0     # away from the first broker: check this often whether it is back
    username: str | None = None
    password: str | None = Field(None, repr=False)
    ca_file: str | None = None          # TLS: trust this CA (mqtts:// uses the system store otherwise)
    cert_file: str | None = None        # TLS client certificate ...
    key_file: str | None = None         # ... and its private key
    keepalive: int = Field(30, ge=5, le=3600)   # seconds; the Last Will fires after ~1.5x this
    reconnect_min: float = 0.5          # reconnect backoff doubles from min to max
    reconnect_max: float = 30.0
    inflight: int = Field(64, ge=1, le=1000)    # QoS 1 publishes awaiting PUBACK at once
    spool_max_records: int = Field(100_000, ge=10)
    spool_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    spool_sync: SpoolSync = "full"      # "full": a record survives power loss; "normal": only a crash
    command_keys: Paths = ()            # public key files; when set, every command must be signed
    command_window_s: float = 300.0     # a signed command's timestamp must be this close to now
    command_max_bytes: int = 256 * 1024
    transfer_dir: str | None = None     # chunked transfers land here (default: beside the spool)
    transfer_max_bytes: int = 512 * 1024 * 1024
    input_receive_max: int = Field(64, ge=1, le=65535)   # MQTT inputs delivered but not yet answered, at most
    # seconds the broker keeps unanswered inputs for a dead device (a persistent session is what
    # makes inputs survive a restart)
    input_session_expiry: int = Field(86400, ge=1, le=0xFFFFFFFF)
    # inputs held in memory unanswered, at most, whatever the broker sends (0: 4 x input_receive_max);
    # past it the input connection pauses and reconnects at half (edge/telemetry/inflow.py)
    input_max_held: int = 0
    # "auto": MQTT 5, falling back to 3.1.1 when the broker refuses it (mqtt.py); "5" or "3.1.1" pin it.
    # Under 3.1.1 input_max_held is the only bound on inputs (no Receive Maximum) and the input
    # session never expires on the broker (no Session Expiry): see docs/telemetry.md
    mqtt_version: MqttVersion = "auto"

    @model_validator(mode="before")
    @classmethod
    def _first_broker(cls, table):
        """``brokers = [...]`` alone: its first entry is ``broker`` (the preferred one)."""
        if isinstance(table, dict) and table.get("brokers") and not table.get("broker"):
            brokers = table["brokers"]
            table = {**table, "broker": brokers if isinstance(brokers, str) else list(brokers)[0]}
        return table

    @model_validator(mode="after")
    def _rules(self):
        rules = Rules()
        url = self._broker_url(rules)
        urls = [u for u in (self._parse(b, "brokers", rules) for b in self.brokers) if u is not None]
        rules.check(not urls or url is None or url == urls[0], "brokers",
                    f"broker {self.broker!r} is not the first of brokers {list(self.brokers)}",
                    "give the failover list as brokers = [...] alone (its first is the preferred)")
        rules.check(len(set(urls)) == len(urls), "brokers", "brokers lists a broker twice")
        rules.check(1 <= self.broker_failback_s <= 86400, "broker_failback_s",
                    "broker_failback_s must be 1..86400 seconds")
        rules.check(not self.input_max_held or self.input_receive_max <= self.input_max_held <= 1_000_000,
                    "input_max_held", f"input_max_held must be 0 (automatic) or input_receive_max..1000000, "
                    f"not {self.input_max_held}", "below input_receive_max even a broker that honours Receive "
                    "Maximum would pause the inputs at every batch")
        rules.check((self.cert_file is None) == (self.key_file is None), "cert_file",
                    "a client certificate needs both cert_file and key_file")
        rules.check(not (self.ca_file or self.cert_file) or any(u.tls for u in [url, *urls] if u), "broker",
                    "TLS files are set but the broker URL is mqtt:// (plain TCP)", "use mqtts://")
        rules.done()
        return self

    def _broker_url(self, rules: Rules) -> BrokerUrl | None:
        return None if self.broker is None else self._parse(self.broker, "broker", rules)

    @staticmethod
    def _parse(text: str, key: str, rules: Rules) -> BrokerUrl | None:
        try:
            return parse_broker_url(text)
        except UsageError as exc:
            rules.check(False, key, exc.message, exc.hint, code=exc.code)
            return None

    @property
    def input_held_limit(self) -> int:
        """``input_max_held``, or 4 x ``input_receive_max`` when it is 0: room for the broker's
        window several times over, so a broker that honours Receive Maximum never meets it."""
        return self.input_max_held or 4 * self.input_receive_max

    @property
    def url(self) -> BrokerUrl:
        return self.broker_urls[0]

    @property
    def broker_urls(self) -> list[BrokerUrl]:
        """The brokers to use, in order of preference (``brokers``, else just ``broker``)."""
        return [parse_broker_url(b) for b in self.brokers] or [parse_broker_url(self.broker)]

    @classmethod
    def from_dict(cls, table: dict, *, file: str | None = None) -> "TelemetryConfig":
        """Build from a ``[telemetry]`` TOML table; every problem (unknown keys too) -> one UsageError."""
        return load(cls, table, file=file)
