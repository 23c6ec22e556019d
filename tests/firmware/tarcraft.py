"""Rewrite a real bundle into hostile variants: extra, renamed or special members, re-signed or not.

Used to show that install refuses each one before a byte reaches a slot. Re-signing with the
*trusted* key models a compromised build machine: the signature is fine, the content is not.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from core import keys


def read_entries(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(bundle, "r:") as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isreg() else None
            out.append((info, data))
    return out


def write_entries(path: Path, entries) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info = _copy(info)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _copy(info: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    for attr in ("mode", "mtime", "uid", "gid", "type", "linkname", "devmajor", "devminor", "size"):
        setattr(new, attr, getattr(info, attr))
    return new


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def special_entry(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3     # /dev/null's numbers
    return info, None


def resign(entries, private_key_path: Path, *, extra_members: dict | None = None,
           manifest_edit=None):
    """Recompute the manifest's member table from the file entries, apply an edit, sign again."""
    key = keys.load_private(private_key_path)
    entries = [(i, d) for i, d in entries if i.name != "signature"]
    manifest_index = next(n for n, (i, _) in enumerate(entries) if i.name == "manifest.json")
    manifest = json.loads(entries[manifest_index][1])
    members = {}
    for info, data in entries:
        if info.name != "manifest.json" and data is not None:
            members[info.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    members.update(extra_members or {})
    manifest["members"] = members
    if manifest_edit:
        manifest_edit(manifest)
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    entries[manifest_index] = (entries[manifest_index][0], raw)
    entries.insert(manifest_index + 1, file_entry("signature", keys.sign(key, raw).encode()))
    return entries
