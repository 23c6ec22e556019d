"""OTA: the ``deploy-firmware`` command. A received bundle file -> install -> validate -> events.

The bytes arrive through the telemetry engineer's chunked transfer (``edge/telemetry/transfer.py``:
``deploy-firmware.begin/.chunk/.status/.commit`` with per-chunk and whole-file sha256 and resume);
on ``commit`` the assembled file is handed to ``deploy_firmware``, which

    1 refuses a version this device already recorded as failed (never forced over MQTT: that is
      how a fleet avoids an install -> fail -> revert -> install loop), then installs
      (full verification first; ``force`` from the command only allows a downgrade/reinstall);
    2 reports progress as ``{"event": "firmware", "phase": ...}`` records through ``emit``;
    3 runs the health check at once and reports ``validated`` or ``reverted`` (with the reason) --
      or, with ``validate_now=False`` (the daemon's choice, ``firmware/daemon_hook.py``),
      leaves the new slot unvalidated: the restarted daemon boots it on trial and validates it
      itself, so a bundle whose daemon cannot even start is caught by the boot counter.
The reply tells the sender the outcome and whether the daemon must restart into the new slot.

``deploy-firmware-url`` is the same from a URL: ``{"url": "https://...", "sha256": "...", ["force"]}``;
the device downloads it (http/https only, size bounded, the announced sha256 must match) into
``<root>/ganglion/downloads`` and deploys it. The sha256 in the command binds the download to what
the operator meant; the bundle's own signature still decides whether it is installed.

``register(telemetry, root, trusted)`` wires both into a running ``edge.telemetry.Telemetry``.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from core.errors import FirmwareError, GanglionError
from firmware.errors import InstallError
from firmware.install import install
from firmware.rootboard import resolve
from firmware.slots import Layout, find_version
from firmware.validate import validate
from firmware.verify import verify

VERB = "deploy-firmware"
URL_VERB = "deploy-firmware-url"
MAX_DOWNLOAD_BYTES = 1 << 30
HEX64 = re.compile(r"[0-9a-f]{64}")
Emit = Callable[[dict], None]


def deploy_firmware(bundle: str | Path, root, trusted, emit: Emit, *, force: bool = False,
                    layout: Layout | None = None, validate_options: dict | None = None,
                    validate_now: bool = True) -> dict:
    """Install and validate one received bundle; every phase is also an event through ``emit``."""
    layout = layout or resolve(root)

    def event(phase: str, **detail) -> None:
        emit({"event": "firmware", "phase": phase, **detail})

    try:
        manifest = verify(bundle, trusted)
        version = manifest.version
        failed = layout.backend().load().failed_versions
        if (key := find_version(failed, version)) is not None:
            raise InstallError(f"version {version} already failed on this device "
                               f"({failed[key].get('reason')}); not retrying it",
                               code="firmware.failed_version", hint="publish a fixed, higher version")
        total = len(manifest.members)
        event("installing", version=version, board=manifest.board, members=total)
        written = [0]

        def progress(step: str, detail=None) -> None:
            if step == "write":
                written[0] += 1
                event("progress", version=version, done=written[0], total=total, member=detail)
            elif step in ("switch",):
                event("switching", version=version, slot=detail)

        result = install(bundle, root, trusted, force, layout=layout, progress=progress, verified=manifest)
    except GanglionError as exc:
        event("refused", error=exc.to_dict())
        raise
    event("installed", version=version, slot=result["slot"])
    if not validate_now:
        return {"outcome": "installed", "version": version, "slot": result["slot"], "restart": True}
    report = validate(root, layout=layout, **(validate_options or {}))
    if report["ok"]:
        event("validated", version=version, slot=result["slot"], checks=report["checks"])
        return {"outcome": "validated", "version": version, "slot": result["slot"], "restart": True}
    event("reverted", version=version, slot=result["slot"], failed_check=report.get("failed_check"),
          reason=report.get("reason"), failure_class=report.get("failure_class"), revert=report.get("revert"))
    return {"outcome": "reverted", "version": version, "failed_check": report.get("failed_check"),
            "reason": report.get("reason"), "failure_class": report.get("failure_class"), "restart": False}


def on_complete(root, trusted, emit: Emit, **options) -> Callable[[Path, dict, dict], dict]:
    """The ``on_complete(path, info, args)`` callback for ``TransferReceiver.install``."""
    def handler(path: Path, info: dict, args: dict) -> dict:
        return deploy_firmware(path, root, trusted, emit, force=bool(args.get("force", False)), **options)
    return handler


def download(url: str, sha256: str, folder: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Fetch ``url`` into ``folder`` (temp name), bounded, and check its sha256; typed errors only."""
    def fail(message: str, code: str = "firmware.download"):
        raise FirmwareError(message, where=url, code=code)

    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        fail("only http:// and https:// URLs are fetched", "firmware.url")
    if not isinstance(sha256, str) or not HEX64.fullmatch(sha256):
        fail("'sha256' must be 64 lowercase hex digits", "firmware.url")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download.", suffix=".fw")
    path, digest, size = Path(tmp), hashlib.sha256(), 0
    try:
        with open(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                size += len(block)
                if size > max_bytes:
                    fail(f"download is larger than {max_bytes} bytes", "firmware.too_large")
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        path.unlink(missing_ok=True)
        fail(f"download failed: {exc}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        path.unlink(missing_ok=True)
        fail("downloaded file does not match the announced sha256", "firmware.hash")
    return path


def url_handler(root, trusted, emit: Emit, **options) -> Callable[[dict], dict]:
    """The ``deploy-firmware-url`` command handler: download, deploy, delete the download."""
    layout = options.get("layout") or resolve(root)
    folder = layout.root / layout.base / "downloads"

    def handler(args: dict) -> dict:
        try:
            path = download(args.get("url"), args.get("sha256"), folder)
        except FirmwareError as exc:
            emit({"event": "firmware", "phase": "refused", "error": exc.to_dict()})
            raise
        try:
            return deploy_firmware(path, root, trusted, emit, force=bool(args.get("force", False)), **options)
        finally:
            path.unlink(missing_ok=True)
    return handler


def register(telemetry, root, trusted, **options):
    """Wire ``deploy-firmware.*`` and ``deploy-firmware-url`` into a running Telemetry; events go out
    as ``events`` records. Returns the transfer receiver."""
    emit = lambda payload: telemetry.record("events", payload)  # noqa: E731 - a one-line adapter
    telemetry.register_command(URL_VERB, url_handler(root, trusted, emit, **options))
    return telemetry.register_transfer(VERB, on_complete(root, trusted, emit, **options))
