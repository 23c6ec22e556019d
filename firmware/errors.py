"""Firmware errors: everything a bundle, signature or slot can get wrong."""
from edge.errors import GanglionError


class FirmwareError(GanglionError):
    code = "firmware"
    exit_code = 5
    permanent = True


class SignatureError(FirmwareError):
    """A signature is missing, malformed or made by an untrusted key."""
    code = "firmware.signature"


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
