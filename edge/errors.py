"""The root of Ganglion's exception tree, shared by every package.

    GanglionError                    code, message, where, hint; exit_code for the CLI
    ├── UsageError                   bad flags or config                       (exit 2)
    ├── InputError                   a user's file or data is wrong            (exit 3)
    │   ├── converters.errors.*      model, op, shape, calibration problems
    │   └── ArtifactError            a .gpk is corrupt, unsigned or tampered
    ├── RuntimeBackendError          an interpreter / delegate / provider failed (exit 4)
    ├── firmware.errors.*            bundle, signature, slot problems          (exit 5)
    └── TelemetryError               broker, spool, command problems           (exit 6)

Every error carries a stable ``code`` (dotted, e.g. ``convert.unsupported_op``) so scripts and
tests can match on it, ``where`` (a file, a node, a topic) and a ``hint`` that says how to fix it.
The CLI (``edge.cli``) prints one readable message and exits with ``exit_code``; no traceback
unless ``GANGLION_DEBUG=1``. Library code raises these instead of using ``assert``.
"""
from __future__ import annotations


class GanglionError(Exception):
    """Base class. Subclasses set ``code`` and ``exit_code``; instances add where/hint."""

    code = "ganglion.error"
    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        if code is not None:
            self.code = code

    def render(self) -> str:
        """One human-readable block: what, where, how to fix."""
        lines = [f"error[{self.code}]: {self.message}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.hint:
            lines.append(f"  hint:  {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """For MQTT error replies and JSON output."""
        return {"code": self.code, "message": self.message, "where": self.where, "hint": self.hint}


class UsageError(GanglionError):
    code = "usage"
    exit_code = 2


class InputError(GanglionError):
    code = "input"
    exit_code = 3


class ArtifactError(InputError):
    code = "artifact.invalid"


class RuntimeBackendError(GanglionError):
    code = "runtime.backend"
    exit_code = 4


class TelemetryError(GanglionError):
    code = "telemetry"
    exit_code = 6
