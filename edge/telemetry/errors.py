"""Telemetry errors: one subclass per thing that can go wrong between a device and its broker.

    TelemetryError (core.errors)            telemetry.*            exit 6
    ├── BrokerError                         telemetry.broker       bad URL, refused or failed connection, TLS
    ├── PublishError                        telemetry.publish      paho refused a publish (queue, size, state)
    ├── SpoolError                          telemetry.spool        the SQLite spool cannot be opened or written
    ├── CommandError                        command.*              a command is malformed, too large, unknown,
    │                                                               unauthorized, a replay, or its handler failed
    └── TransferError                       transfer.*             a chunked transfer is inconsistent or too big

paho's integer return codes are turned into these at one boundary (``edge.telemetry.mqtt``); nothing
else in Ganglion sees a paho return code. A command's error reply is ``CommandError.to_dict()``.
"""
from __future__ import annotations

from core.errors import TelemetryError


class BrokerError(TelemetryError):
    code = "telemetry.broker"


class PublishError(TelemetryError):
    code = "telemetry.publish"


class SpoolError(TelemetryError):
    code = "telemetry.spool"


class CommandError(TelemetryError):
    """A command was refused or failed. ``code`` says which rule (command.malformed, ...)."""
    code = "command.failed"


class TransferError(CommandError):
    code = "transfer.invalid"


__all__ = ["TelemetryError", "BrokerError", "PublishError", "SpoolError", "CommandError", "TransferError"]
