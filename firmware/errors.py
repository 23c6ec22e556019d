"""Firmware errors: everything a bundle or slot can get wrong.

The family's base ``FirmwareError`` and ``SignatureError`` (keys and signatures) live in
``core.errors``, beside the registry that maps ``firmware.*`` codes to exit code 5.
"""
from core.errors import FirmwareError


class BundleError(FirmwareError):
    """A bundle is corrupt, tampered with, or holds an unsafe member."""
    code = "firmware.bundle"


class SlotError(FirmwareError):
    code = "firmware.slot"


class BuildError(FirmwareError):
    """A bundle cannot be built (board, wheels, artifact, config or self-test problem)."""
    code = "firmware.build"


class InstallError(FirmwareError):
    """An install is refused (downgrade, failed version, wrong board) or cannot complete."""
    code = "firmware.install"


class HealthCheckError(FirmwareError):
    """A slot's health check failed: missing wheels, model does not load, self-test mismatch."""
    code = "firmware.health"
