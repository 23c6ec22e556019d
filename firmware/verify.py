"""Verify a ``.fw`` bundle completely, writing nothing: the gate in front of every install.

One forward pass over the tar checks each member's type, name and size (``bundle.check_member``)
and hashes it; then the signature over manifest.json must verify with a trusted key, then the
manifest's shape, then the member set and every sha256 and size must equal the manifest's. Only a
bundle that passes all of it is returned as a ``BundleManifest``. ``inspect`` reads the same facts
without requiring trust, for humans.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

from core import keys
from core.errors import SignatureError
from firmware import wheelinstall
from firmware.bundle import (MANIFEST, MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, MAX_MEMBERS, SIGNATURE,
                             BundleManifest, check_manifest, check_member)
from firmware.errors import BundleError

CHUNK = 1 << 20
SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")


def scan(bundle: str | Path) -> tuple[bytes, str | None, dict]:
    """Read the tar once: (manifest bytes, signature text, {member: {sha256, size}})."""
    where = str(bundle)
    try:
        size = os.path.getsize(bundle)
    except OSError as exc:
        raise BundleError(f"cannot read bundle: {exc}", where=where, code="firmware.unreadable")
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is too large ({size} bytes)", where=where, code="firmware.too_large")
    fixed: dict[str, bytes] = {}          # manifest.json and signature, read whole (bounded)
    seen: dict[str, dict] = {}            # every other member: its sha256 and size
    try:
        with tarfile.open(bundle, mode="r:") as tar:
            for info in tar:
                check_member(info, where)
                if info.name in seen or info.name in fixed:
                    # tar lets a later copy win on extraction: refuse the trick outright
                    raise BundleError(f"bundle member {info.name!r} appears twice", where=where,
                                      code="firmware.duplicate_member")
                if len(seen) >= MAX_MEMBERS:
                    raise BundleError("bundle has too many members", where=where, code="firmware.too_large")
                fh = tar.extractfile(info)
                if info.name in (MANIFEST, SIGNATURE):
                    if info.size > MAX_MANIFEST_BYTES:
                        raise BundleError(f"{info.name} is too large", where=where, code="firmware.too_large")
                    fixed[info.name] = fh.read()
                    continue
                seen[info.name] = {"sha256": hash_stream(fh), "size": info.size}
                if info.name.startswith("wheels/"):
                    fh.seek(0)
                    _check_wheel(fh, f"{where}: {info.name}")
    except tarfile.TarError as exc:
        raise BundleError(f"not a readable firmware bundle: {exc}", where=where, code="firmware.corrupt",
                          hint="the file is truncated or damaged; transfer it again")
    if MANIFEST not in fixed:
        raise BundleError("bundle has no manifest.json", where=where, code="firmware.manifest")
    signature = fixed[SIGNATURE].decode("ascii", "replace") if SIGNATURE in fixed else None
    return fixed[MANIFEST], signature, seen


def _check_wheel(fh, where: str) -> None:
    """A wheel's zip entries are checked here too, so a hostile wheel is refused before any write."""
    try:
        with zipfile.ZipFile(fh) as zf:
            wheelinstall.check_zip(zf, where)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"wheel is not a readable zip: {exc}", where=where, code="firmware.wheel")


def hash_stream(fh) -> str:
    """The sha256 of what is left in a binary file object, read in bounded chunks (build uses it too)."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def verify(bundle: str | Path, trusted) -> BundleManifest:
    """Everything about the bundle, or a typed error. ``trusted``: a public key, a list, or key paths."""
    where = str(bundle)
    trusted_keys = load_trusted(trusted)
    manifest_raw, signature, seen = scan(bundle)
    if signature is None:
        raise SignatureError("bundle is not signed", where=where, code="signature.missing",
                             hint="build it with --key; unsigned bundles are never installed")
    if not SIGNATURE_RE.fullmatch(signature):
        # one canonical spelling: hex is case-blind, so 'F' for 'f' would verify yet change the file
        raise SignatureError("signature is not 128 lowercase hex digits", where=where,
                             code="signature.malformed")
    keys.verify(trusted_keys, manifest_raw, signature, where=where)
    data = _parse(manifest_raw, where)
    expected = data["members"]
    extra, missing = sorted(set(seen) - set(expected)), sorted(set(expected) - set(seen))
    if extra or missing:
        raise BundleError(f"members do not match the manifest (extra: {extra}, missing: {missing})",
                          where=where, code="firmware.members")
    for name, entry in expected.items():
        if seen[name] != {"sha256": entry["sha256"], "size": entry["size"]}:
            raise BundleError(f"member {name} does not match its sha256/size in the signed manifest",
                              where=where, code="firmware.hash",
                              hint="the bundle was altered or damaged in transit")
    return BundleManifest(data=data, raw=manifest_raw, signature=signature)


def _parse(manifest_raw: bytes, where: str) -> dict:
    try:
        data = json.loads(manifest_raw)
    except ValueError as exc:
        raise BundleError(f"manifest.json is not JSON: {exc}", where=where, code="firmware.manifest")
    check_manifest(data, where)
    return data


def load_trusted(trusted) -> list:
    """Accept a key, a list of keys, or paths to .pub files; an empty trust set is an error."""
    items = trusted if isinstance(trusted, (list, tuple)) else [trusted]
    out = keys.load_publics(item for item in items if item is not None)
    if not out:
        raise SignatureError("no trusted key given", code="signature.no_trust",
                             hint="pass --trust K.pub (made by 'ganglion keys generate')")
    return out


def inspect(bundle: str | Path, trusted=None) -> dict:
    """Manifest and member listing for humans; ``verified`` says whether a trusted key signed it."""
    manifest_raw, signature, seen = scan(bundle)
    data = _parse(manifest_raw, str(bundle))
    verified = None
    if trusted:
        try:
            verify(bundle, trusted)
            verified = True
        except (BundleError, SignatureError) as exc:
            verified = False
            data = {**data, "verify_error": exc.to_dict()}
    return {"manifest": data, "signed": signature is not None, "verified": verified,
            "members": seen}
