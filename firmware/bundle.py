"""The ``.fw`` bundle format: an uncompressed POSIX tar with a signed manifest.

    manifest.json          version, board, created, builder, and ``members``: {name: {sha256, size}}
    signature              hex ed25519 signature over the exact bytes of manifest.json
    artifact/<name>.gpk    the model artifact (itself signed; verified again at build)
    config/daemon.toml     the daemon configuration for this device class
    selftest/input.npz     a recorded input ...
    selftest/expected.npz  ... and the output the artifact gave for it at build time
    wheels/<file>.whl      every wheel the board needs, for its platform tags and Python

Why tar and not zip: a tar can be verified in one forward pass with bounded memory (an OTA bundle
is checked while it is still a file on a small disk, never loaded whole), every member states its
type explicitly, so symlinks, hard links and device nodes are refused by type rather than guessed
from zip "external attributes", and ``tar tvf app.fw`` lists it anywhere. It is uncompressed
because wheels and .gpk artifacts are already zip-compressed.

This module holds the names, bounds and the member-by-member safety check; ``verify.py`` is the verb.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from firmware.errors import BundleError
from firmware.slots import parse_version

FORMAT = "ganglion-firmware"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature"
# member folder -> what it may hold; one level deep, no sub-folders.
FOLDERS = ("artifact", "config", "selftest", "wheels")
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBER_BYTES = 1 << 30
MAX_BUNDLE_BYTES = 4 << 30
MAX_MEMBERS = 4096
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class BundleManifest:
    """A verified manifest: ``data`` is the parsed JSON, ``raw`` the exact signed bytes."""
    data: dict
    raw: bytes
    signature: str

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def board(self) -> str:
        return self.data["board"]

    @property
    def members(self) -> dict:
        return self.data["members"]

    def wheels(self) -> list[str]:
        return sorted(n for n in self.members if n.startswith("wheels/"))


def check_member(info: tarfile.TarInfo, where: str) -> None:
    """Refuse anything but a plain file with a safe, one-level name inside a known folder."""
    name = info.name
    if not info.isreg():
        kind = ("symlink" if info.issym() else "hard link" if info.islnk() else
                "device file" if info.ischr() or info.isblk() else "fifo" if info.isfifo() else
                "directory" if info.isdir() else "special member")
        raise BundleError(f"bundle member {name!r} is a {kind}; only plain files are allowed",
                          where=where, code="firmware.unsafe_member",
                          hint="a bundle made by 'ganglion firmware build' never holds one: do not trust this file")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError(f"bundle member {name!r} has an absolute or unsafe name", where=where,
                          code="firmware.unsafe_path")
    parts = PurePosixPath(name).parts
    if ".." in name.split("/") or str(PurePosixPath(name)) != name:
        raise BundleError(f"bundle member {name!r} escapes the bundle ('..' or a non-normal path)",
                          where=where, code="firmware.unsafe_path")
    if name in (MANIFEST, SIGNATURE):
        pass
    elif len(parts) != 2 or parts[0] not in FOLDERS or not SAFE_NAME.fullmatch(parts[1]):
        raise BundleError(f"bundle member {name!r} is not in one of {', '.join(FOLDERS)}/",
                          where=where, code="firmware.unsafe_path")
    if info.size > MAX_MEMBER_BYTES:
        raise BundleError(f"bundle member {name!r} is too large ({info.size} bytes)", where=where,
                          code="firmware.too_large")


def check_manifest(data, where: str) -> None:
    """The manifest's own shape; member hashes are compared against the tar by ``verify``."""
    def fail(message: str):
        raise BundleError(f"manifest: {message}", where=where, code="firmware.manifest")

    if not isinstance(data, dict):
        fail("not a JSON object")
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        fail(f"format is {data.get('format')!r} v{data.get('format_version')!r}; "
             f"this reader knows {FORMAT} v{FORMAT_VERSION}")
    for key in ("version", "board", "created", "architecture", "python"):
        if not isinstance(data.get(key), str):
            fail(f"'{key}' must be a string")
    try:
        parse_version(data["version"])
    except Exception:
        fail(f"version {data['version']!r} is not a PEP 440 version")
    members = data.get("members")
    if not isinstance(members, dict) or not members:
        fail("'members' must be a non-empty table")
    for name, entry in members.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int) and 0 <= entry["size"] <= MAX_MEMBER_BYTES):
            fail(f"member {name!r} needs sha256 and a bounded size")
        if name in (MANIFEST, SIGNATURE):
            fail(f"member {name!r} cannot list itself")
    for key in ("artifact", "config"):
        if data.get(key) not in members:
            fail(f"'{key}' must name a member")
    selftest = data.get("selftest")
    if not isinstance(selftest, dict) or selftest.get("input") not in members \
            or selftest.get("expected") not in members:
        fail("'selftest' must name its input and expected members")
