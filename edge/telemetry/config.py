"""Telemetry settings: the broker URL parser and the frozen ``TelemetryConfig``.

A broker is named by one URL, ``mqtt://host:port`` (plain TCP, default port 1883) or
``mqtts://host:port`` (TLS, default port 8883); credentials may ride in the URL
(``mqtt://user:pass@host``) or come from the config. ``TelemetryConfig.from_dict`` reads the
``[telemetry]`` table of the daemon's TOML and refuses unknown keys, so a typo is an error
instead of a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from edge.errors import UsageError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# A device id becomes one MQTT topic level: no wildcards, no separators, nothing exotic.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...`` -> BrokerUrl; UsageError otherwise."""
    hint = "write it as mqtt://HOST:PORT or mqtts://HOST:PORT"
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(f"not a broker URL: {url!r}", where="--broker", hint=hint, code="usage.broker_url")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"unsupported broker scheme {parts.scheme!r}", where=url, hint=hint,
                         code="usage.broker_url")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise UsageError("the broker port is not a number in 1..65535", where=url, hint=hint,
                         code="usage.broker_url") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError("a broker URL holds only a host and a port", where=url, hint=hint,
                         code="usage.broker_url")
    return BrokerUrl(host=parts.hostname, port=port, tls=scheme == "mqtts",
                     username=unquote(parts.username) if parts.username else None,
                     password=unquote(parts.password) if parts.password else None)


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise UsageError(f"invalid device id {device_id!r}", where="device_id", code="usage.device_id",
                         hint="use 1-64 characters from A-Z a-z 0-9 . _ - (it becomes an MQTT topic level)")
    return device_id


@dataclass(frozen=True)
class TelemetryConfig:
    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None          # TLS: trust this CA (mqtts:// uses the system store otherwise)
    cert_file: str | None = None        # TLS client certificate ...
    key_file: str | None = None         # ... and its private key
    keepalive: int = 30                 # seconds; the Last Will fires after ~1.5x this
    reconnect_min: float = 0.5          # reconnect backoff doubles from min to max
    reconnect_max: float = 30.0
    inflight: int = 64                  # QoS 1 publishes awaiting PUBACK at once
    spool_max_records: int = 100_000
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_sync: str = "full"            # "full": a record survives power loss; "normal": only a crash
    command_keys: tuple[str, ...] = ()  # public key files; when set, every command must be signed
    command_window_s: float = 300.0     # a signed command's timestamp must be this close to now
    command_max_bytes: int = 256 * 1024
    transfer_dir: str | None = None     # chunked transfers land here (default: beside the spool)
    transfer_max_bytes: int = 512 * 1024 * 1024
    input_receive_max: int = 64         # MQTT inputs delivered but not yet answered, at most
    input_session_expiry: int = 86400   # seconds the broker keeps unanswered inputs for a dead device

    def __post_init__(self):
        url = parse_broker_url(self.broker)
        if not 5 <= self.keepalive <= 3600:
            raise UsageError("keepalive must be 5..3600 seconds", where="telemetry.keepalive", code="usage.config")
        if not 1 <= self.inflight <= 1000:
            raise UsageError("inflight must be 1..1000", where="telemetry.inflight", code="usage.config")
        if not 1 <= self.input_receive_max <= 65535:
            raise UsageError("input_receive_max must be 1..65535", where="telemetry.input_receive_max",
                             code="usage.config")
        if not 1 <= self.input_session_expiry <= 0xFFFFFFFF:
            raise UsageError("input_session_expiry must be >= 1 second", where="telemetry.input_session_expiry",
                             code="usage.config", hint="a persistent session is what makes inputs survive a restart")
        if self.spool_sync not in ("full", "normal"):
            raise UsageError("spool_sync must be 'full' or 'normal'", where="telemetry.spool_sync",
                             code="usage.config")
        if self.spool_max_records < 10 or self.spool_max_bytes < 4096:
            raise UsageError("the spool bound is too small (>= 10 records, >= 4096 bytes)",
                             where="telemetry.spool_max_*", code="usage.config")
        if (self.cert_file is None) != (self.key_file is None):
            raise UsageError("a client certificate needs both cert_file and key_file",
                             where="telemetry.cert_file", code="usage.config")
        if not url.tls and (self.ca_file or self.cert_file):
            raise UsageError("TLS files are set but the broker URL is mqtt:// (plain TCP)",
                             where="telemetry.broker", hint="use mqtts://", code="usage.config")

    @property
    def url(self) -> BrokerUrl:
        return parse_broker_url(self.broker)

    @classmethod
    def from_dict(cls, table: dict) -> "TelemetryConfig":
        """Build from a TOML table; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise UsageError(f"unknown telemetry setting(s): {', '.join(unknown)}", where="[telemetry]",
                             hint=f"known: {', '.join(sorted(known))}", code="usage.config")
        values = dict(table)
        if "command_keys" in values:
            keys = values["command_keys"]
            values["command_keys"] = (keys,) if isinstance(keys, str) else tuple(keys)
        return cls(**values)
