"""``firmware build``: one signed bundle for one board (wheels + artifact + config + golden self-test).

Steps, each failing with a typed error before anything is written: load the board; open the .gpk
(every member hash checked, its signature too when ``artifact_trust`` is given) and take the model
in the board's preferred format; parse the daemon config as TOML; gather the board's wheels
(``firmware.wheels``); run the model once to record the golden self-test; hash every member into
the manifest; sign the manifest bytes; write the tar to a temp file beside ``out`` and rename it
into place (never a half-written bundle).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

import boards
from core import __version__, keys
from core.artifact import read as read_artifact
from core.errors import GanglionError
from edge.daemon.config import from_dict
from firmware import selftest, selfwheel, wheels
from firmware.bundle import FORMAT, FORMAT_VERSION, MANIFEST, SIGNATURE, SAFE_NAME
from firmware.errors import BuildError
from firmware.slots import now, parse_version
from firmware.verify import hash_stream

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def build(board, artifact, config, key, out, wheelhouse=None, *, version: str | None = None,
          cache=None, artifact_trust=None, include_self: bool = True, progress=None) -> dict:
    """Write the bundle to ``out`` and return its manifest. ``wheelhouse``: folder(s) or None.

    ``include_self``: add Ganglion's own device code as a wheel (``selfwheel``) unless a
    ganglion_edge wheel is already among the board's wheels."""
    say = progress or (lambda message: None)
    board = board if isinstance(board, boards.Board) else boards.load(board)
    private = key if not isinstance(key, (str, Path)) else keys.load_private(key)
    gpk_path = Path(artifact)
    try:
        trusted = [artifact_trust] if isinstance(artifact_trust, (str, Path)) else artifact_trust
        gpk = read_artifact(gpk_path, trusted_keys=keys.load_publics(trusted) if trusted else None)
    except GanglionError as exc:
        raise BuildError(f"artifact rejected: {exc.message}", where=str(gpk_path), code="firmware.artifact",
                         hint=exc.hint) from exc
    except (zipfile.BadZipFile, OSError, ValueError) as exc:   # core.artifact lets a damaged zip entry through
        raise BuildError(f"artifact is damaged: {exc}", where=str(gpk_path), code="firmware.artifact",
                         hint="convert it again") from exc
    model = gpk.model_bytes(board.artifact.format)
    version = _version(version, gpk.manifest)
    config_bytes = _read_config(config, board, f"artifact/{_safe(gpk_path.name)}")
    say("collecting wheels")
    wheel_paths = _collect_wheels(board, wheelhouse, cache)
    with tempfile.TemporaryDirectory(prefix="ganglion-build-") as tmp:
        if include_self and not any(wheels.WheelName.parse(p.name).name == canonicalize_name(selfwheel.DIST)
                                    for p in wheel_paths):
            wheel_paths.append(selfwheel.build_self_wheel(tmp))
        return _assemble(board, gpk_path, gpk, model, version, config_bytes, wheel_paths, private,
                         Path(out), say)


def _assemble(board, gpk_path: Path, gpk, model: bytes, version: str, config_bytes: bytes,
              wheel_paths: list[Path], private, out: Path, say) -> dict:
    """Record the golden, hash every member into the manifest, sign it, write the tar."""
    say("recording the golden self-test")
    try:
        input_npz, expected_npz, selftest_entry = selftest.record(model, board.artifact.format)
    except GanglionError as exc:
        raise BuildError(f"the artifact does not run on the host: {exc.message}", where=str(gpk_path),
                         code="firmware.selftest_record") from exc
    members: dict[str, bytes | Path] = {
        f"artifact/{_safe(gpk_path.name)}": gpk_path.read_bytes(),
        "config/daemon.toml": config_bytes,
        "selftest/input.npz": input_npz,
        "selftest/expected.npz": expected_npz,
    }
    for path in wheel_paths:
        members[f"wheels/{_safe(path.name)}"] = path
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": version, "board": board.name,
        "architecture": board.architecture, "python": board.python.version,
        "platform_tags": list(board.python.platform_tags), "created": now(),
        "builder": f"ganglion {__version__}", "config": "config/daemon.toml",
        "artifact": f"artifact/{_safe(gpk_path.name)}",
        "model": {"name": gpk.manifest.get("name"), "version": gpk.manifest.get("version"),
                  "format": board.artifact.format},
        "selftest": {"input": "selftest/input.npz", "expected": "selftest/expected.npz", **selftest_entry},
        "wheels": [_wheel_entry(p) for p in wheel_paths],
        "members": {name: _digest(data) for name, data in sorted(members.items())},
    }
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    say("writing the bundle")
    _write_tar(out, raw, keys.sign(private, raw), members)
    return manifest


def _wheel_entry(path: Path) -> dict:
    wheel = wheels.WheelName.parse(path.name)
    return {"file": f"wheels/{path.name}", "name": wheel.name, "version": str(wheel.version)}


def _version(version: str | None, gpk_manifest: dict) -> str:
    """The bundle's version in PEP 440's normal form ('1.2.0-rc1' -> '1.2.0rc1'), so two spellings of
    one version are one string in the device's failed-version list too."""
    candidate = version or gpk_manifest.get("version")
    try:
        return str(parse_version(candidate))
    except GanglionError:
        raise BuildError(f"bundle version {candidate!r} is not a PEP 440 version", code="firmware.version",
                         hint="pass --version 1.2.0; versions order installs and refuse downgrades") from None


def _read_config(config, board, artifact_member: str) -> bytes:
    """The daemon config must load with the daemon's own schema (``edge.daemon.config``, the same
    validation ``ganglion run`` does on the device) and agree with the bundle."""
    path = Path(config)
    try:
        data = path.read_bytes()
        table = tomllib.loads(data.decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"daemon config is not readable TOML: {exc}", where=str(path),
                         code="firmware.config")
    try:      # the device's own schema, every rule included: what would fail on the device fails here
        cfg = from_dict(table, where=str(path))
    except GanglionError as exc:
        raise BuildError(f"daemon config: {exc.message}", where=exc.where, code="firmware.config",
                         hint=exc.hint) from exc
    if cfg.board and cfg.board != board.name:
        raise BuildError(f"daemon config says board {cfg.board!r}, the bundle is for {board.name!r}",
                         where=f"{path}: board", code="firmware.config")
    if cfg.model.path and posixpath.normpath(posixpath.join("config", cfg.model.path)) != artifact_member:
        raise BuildError(f"daemon config's model.path {cfg.model.path!r} is not the bundled artifact",
                         where=f"{path}: model.path", code="firmware.config",
                         hint=f"in a bundle the config sits in config/: use path = \"../{artifact_member}\" "
                              "or leave it out")
    return data


def _collect_wheels(board, wheelhouse, cache) -> list[Path]:
    if wheelhouse:
        folders = [wheelhouse] if isinstance(wheelhouse, (str, Path)) else list(wheelhouse)
        return wheels.from_wheelhouses(board, folders)
    return wheels.fetch(board, cache)


def _safe(name: str) -> str:
    if not SAFE_NAME.fullmatch(name):
        raise BuildError(f"file name {name!r} cannot be a bundle member", code="firmware.member_name",
                         hint="rename it to letters, digits, '.', '_', '+', '-'")
    return name


def _digest(data: bytes | Path) -> dict:
    if isinstance(data, bytes):
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    with open(data, "rb") as fh:
        return {"sha256": hash_stream(fh), "size": data.stat().st_size}


def _write_tar(out: Path, manifest_raw: bytes, signature: str, members: dict) -> None:
    """Manifest first, signature second, then members sorted: a reader meets the manifest first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, MANIFEST, manifest_raw)
                _add(tar, SIGNATURE, signature.encode())
                for name, data in sorted(members.items()):
                    _add(tar, name, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
    if isinstance(data, bytes):
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        info.size = data.stat().st_size
        with open(data, "rb") as fh:
            tar.addfile(info, fh)
