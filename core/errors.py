"""The root of Ganglion's exception tree, shared by every package.

    GanglionError                    code, message, where, hint; exit_code for the CLI
    ├── UsageError                   bad flags or config                       (exit 2)
    ├── InputError                   a user's file or data is wrong            (exit 3)
    │   ├── converters.errors.*      model, op, shape, calibration problems
    │   ├── boards.BoardError        a board file is wrong
    │   └── ArtifactError            a .gpk is corrupt, unsigned, tampered, or its signature fails
    ├── RuntimeBackendError          an interpreter / delegate / provider failed (exit 4)
    ├── FirmwareError                bundle, slot problems (firmware.errors.*) (exit 5)
    │   └── SignatureError           a key file or a signature (core.keys; bundles, commands)
    └── TelemetryError               broker, spool, command problems           (exit 6)
                                     (edge.telemetry.errors.*)

Exit codes -- one table for every command (docs/errors.md shows it to users):

    0    success
    1    unexpected error: a bug (GANGLION_DEBUG=1 shows the traceback; please report it)
    2    usage: bad flags or config                 UsageError
    3    input: a file or data is wrong (missing, corrupt, unsigned, wrong shape)   InputError
    4    runtime: interpreter, delegate, provider or worker failed (may pass)       RuntimeBackendError
    5    firmware: bundle, signature or slot        firmware.errors.FirmwareError
    6    telemetry: broker, spool, command (may pass)                              TelemetryError
    75   restart requested (firmware OTA, trial revert): systemd restarts at once
    78   `ganglion run` could not start and restarting will not help (a permanent 2/3/5:
         missing model, bad signature, bad config); the unit's RestartPreventExitStatus
    130  interrupted (Ctrl-C)

``permanent`` says whether retrying the same command can help: usage, input and firmware
errors are permanent, runtime and telemetry ones are not.

Every error carries a stable ``code`` (dotted, e.g. ``convert.unsupported_op``) so scripts and
tests can match on it, ``where`` (a file, a node, a topic) and a ``hint`` that says how to fix it.
``CODE_FAMILIES`` is the registry: the first segment of every code in the project (``convert`` of
``convert.shape``) names its family's class, and so its exit code; ``tests/core/test_errors.py``
fails on a code outside it. The CLI (``edge.cli``) prints one readable message and exits with ``exit_code``; no traceback
unless ``GANGLION_DEBUG=1``. Library code raises these instead of using ``assert``.
"""
from __future__ import annotations


EXIT_RESTART = 75          # sysexits EX_TEMPFAIL
EXIT_PERMANENT = 78        # sysexits EX_CONFIG
EXIT_CODES = {0: "success", 1: "unexpected error (a bug)", 2: "usage: bad flags or config",
              3: "input: a file or data is wrong", 4: "runtime: interpreter, delegate or worker failed",
              5: "firmware: bundle, signature or slot", 6: "telemetry: broker, spool or command",
              EXIT_RESTART: "restart requested (firmware OTA / revert)",
              EXIT_PERMANENT: "ganglion run cannot start, restarting will not help", 130: "interrupted"}


class GanglionError(Exception):
    """Base class. Subclasses set ``code``, ``exit_code`` and ``permanent``; instances add where/hint."""

    code = "ganglion.error"
    exit_code = 1
    permanent = False

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
    permanent = True


class InputError(GanglionError):
    code = "input"
    exit_code = 3
    permanent = True


class ArtifactError(InputError):
    code = "artifact.invalid"


class RuntimeBackendError(GanglionError):
    code = "runtime.backend"
    exit_code = 4


class FirmwareError(GanglionError):
    """Firmware bundles and slots; ``firmware.errors`` holds the subclasses."""
    code = "firmware"
    exit_code = 5
    permanent = True


class SignatureError(FirmwareError):
    """A key file cannot be used, or a signature is missing, malformed or made by an untrusted key.
    ``core.artifact`` turns it into an ``ArtifactError`` for a .gpk (exit 3)."""
    code = "signature"


class TelemetryError(GanglionError):
    code = "telemetry"
    exit_code = 6


# The registry of code families: a code's first segment -> the class that sets its exit code
# and permanence. Every code raised anywhere in Ganglion starts with one of these.
CODE_FAMILIES: dict[str, type[GanglionError]] = {
    "ganglion": GanglionError,
    "usage": UsageError,
    "input": InputError, "wire": InputError, "board": InputError,
    "convert": InputError, "inspect": InputError, "verify": InputError,   # converters.errors
    "artifact": ArtifactError,
    "runtime": RuntimeBackendError, "shadow": RuntimeBackendError,    # shadow: edge/daemon/shadow.py
    "firmware": FirmwareError, "signature": SignatureError, "keys": SignatureError,
    "telemetry": TelemetryError, "command": TelemetryError, "transfer": TelemetryError,
}


def family(code: str) -> type[GanglionError]:
    """The class of a code's family (``GanglionError`` for an unknown one)."""
    return CODE_FAMILIES.get(code.split(".", 1)[0], GanglionError)


def error_from_dict(d: dict, default: type[GanglionError] = RuntimeBackendError) -> GanglionError:
    """Rebuild a typed error from ``to_dict()`` output (a worker's report): the class, and so the
    exit code, follows the code's family, so a bad signature stays permanent across the pipe."""
    code = d.get("code") or default.code
    cls = CODE_FAMILIES.get(code.split(".", 1)[0], default)
    return cls(d.get("message") or "failed", where=d.get("where"), hint=d.get("hint"), code=code)
