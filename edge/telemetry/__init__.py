"""MQTT telemetry and control for the device: spool -> publisher -> broker; commands back in.

    service.py    Telemetry: the one handle the daemon uses (record, status, commands, transfers)
    config.py     TelemetryConfig, broker URL parser, device id rule
    topics.py     topic names and the JSON record envelope (the MQTT contract)
    spool.py      SQLite store-and-forward with sequence numbers, bounded, overflow counted
    publisher.py  the thread that drains the spool in order with a bounded in-flight window
    mqtt.py       the only paho importer: MQTT 5 adapter, reconnects, TLS, Last Will, PUBACKs
    commands.py   command checks, idempotency by id, dispatch, replies (response topic)
    signing.py    ed25519 command signatures with topic binding and a time window
    transfer.py   chunked file transfer (resume, sha256) reusable by deploy / firmware OTA
    requester.py  the other side: send commands and files, wait for replies (CLI, tests, fleet tools)
    watch.py      the fleet table of `ganglion telemetry watch`
    cli.py        `ganglion telemetry watch|send|send-file`
See docs/telemetry.md.
"""
from edge.telemetry.config import BrokerUrl, TelemetryConfig, parse_broker_url
from edge.telemetry.errors import (BrokerError, CommandError, PublishError, SpoolError, TelemetryError,
                                   TransferError)

# Telemetry (and with it paho, via mqtt.py) loads on first use, so that stdlib-only users of
# config.py -- firmware's broker probe -- can import the URL parser on a system without paho.


def __getattr__(name):
    # ``from edge.telemetry import Telemetry`` is the documented API (docs/telemetry.md); loaded
    # on first use so that importing the config (firmware validate, build) loads no paho
    if name == "Telemetry":
        from edge.telemetry.service import Telemetry      # lazy export (PEP 562), not a cycle
        return Telemetry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Telemetry", "TelemetryConfig", "BrokerUrl", "parse_broker_url", "TelemetryError", "BrokerError",
           "PublishError", "SpoolError", "CommandError", "TransferError"]
