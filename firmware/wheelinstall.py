"""Install a bundle's wheels into a slot's own site folder, and check them later.

"Wheels installed" for a slot means: every wheel unpacked into ``<slot>/site`` (which the daemon
puts first on ``PYTHONPATH``). We unpack them ourselves instead of calling
``pip install --no-index --find-links``: a wheel is a zip with a fixed layout (PEP 427), and doing
it here works across architectures (an aarch64 slot prepared on an x86_64 host or under qemu, as
the tests do), needs neither pip nor a network on the device, and lets every zip member be checked
like a bundle member (no absolute names, no '..', no symlinks, a bound on the unpacked size).
``<dist>.data/purelib`` and ``platlib`` go to the site folder, ``scripts`` to ``<slot>/bin``;
headers and data files are not needed at run time and are skipped.

``check`` re-hashes every file against the wheel's own RECORD (PEP 376/627), which is how the
health check proves the site folder is exactly what the signed bundle carried.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import stat
import zipfile
from pathlib import Path, PurePosixPath

from firmware.errors import BundleError, HealthCheckError

MAX_UNPACKED_BYTES = 2 << 30


def unpack(wheel, slot: Path, where: str) -> str:
    """Unpack one wheel (path or file object) into ``slot/site``; returns its .dist-info folder name."""
    site, scripts = slot / "site", slot / "bin"
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"wheel is not a readable zip: {exc}", where=where, code="firmware.wheel")
    with zf:
        infos = check_zip(zf, where)
        dist_info = None
        for info in infos:
            name = _check(info, where)
            if name is None:
                continue
            top = name.parts[0]
            if top.endswith(".dist-info") and len(name.parts) == 2 and name.parts[1] == "RECORD":
                dist_info = top
            target = _target(name, site, scripts)
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
            # no fsync per file: the installer makes the whole staging tree durable once (sync_tree)
            if (info.external_attr >> 16) & 0o111:
                target.chmod(0o755)
    if dist_info is None:
        raise BundleError("wheel has no .dist-info/RECORD", where=where, code="firmware.wheel")
    return dist_info


def check_zip(zf: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """Every entry of a wheel is safe to unpack (called by verify, before anything is written)."""
    infos = zf.infolist()
    if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
        raise BundleError("wheel unpacks to too many bytes", where=where, code="firmware.too_large")
    for info in infos:
        _check(info, where)
    return infos


def _check(info: zipfile.ZipInfo, where: str) -> PurePosixPath | None:
    raw = info.filename
    if raw.endswith("/"):
        return None  # a directory entry; folders are made as files need them
    mode = info.external_attr >> 16
    # zip writers often leave the file-type bits 0; only a set, non-regular type is refused
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise BundleError(f"wheel member {raw!r} is not a plain file", where=where,
                          code="firmware.unsafe_member")
    path = PurePosixPath(raw)
    if raw.startswith("/") or "\\" in raw or ".." in path.parts or not path.parts:
        raise BundleError(f"wheel member {raw!r} escapes the site folder", where=where,
                          code="firmware.unsafe_path")
    return path


def _target(name: PurePosixPath, site: Path, scripts: Path) -> Path | None:
    top = name.parts[0]
    if top.endswith(".data") and len(name.parts) > 2:
        kind, rest = name.parts[1], name.parts[2:]
        if kind in ("purelib", "platlib"):
            return site.joinpath(*rest)
        if kind == "scripts":
            return scripts.joinpath(*rest)
        return None
    return site.joinpath(*name.parts)


def check(slot: Path, dist_info: str) -> list[str]:
    """Problems with one installed wheel: RECORD missing, files missing or altered."""
    site = slot / "site"
    record = site / dist_info / "RECORD"
    try:
        rows = list(csv.reader(io.StringIO(record.read_text())))
    except OSError as exc:
        return [f"{dist_info}: RECORD unreadable ({exc})"]
    problems = []
    for row in rows:
        if len(row) < 2 or not row[1]:
            continue  # RECORD itself and .pyc files carry no hash
        path, (algo, _, expected) = row[0], row[1].partition("=")
        target = _target(PurePosixPath(path), site, slot / "bin")
        if target is None:
            continue
        if algo != "sha256":
            problems.append(f"{path}: unsupported hash {algo}")
            continue
        try:
            digest = hashlib.sha256(target.read_bytes()).digest()
        except OSError:
            problems.append(f"{path}: missing")
            continue
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != expected:
            problems.append(f"{path}: altered")
    return problems


def require(slot: Path, dist_infos: list[str]) -> None:
    problems = [p for d in dist_infos for p in check(slot, d)]
    if problems:
        raise HealthCheckError(f"{len(problems)} installed wheel file(s) are missing or altered: "
                               + "; ".join(problems[:5]), where=str(slot / "site"),
                               code="firmware.wheels_damaged", hint="reinstall the bundle")
