"""What the hub was asked to roll out: a model artifact (.gpk) or a firmware bundle (.fw).

``read_upload(path, name, ...)`` tells the two apart -- by the uploaded file's name (``.fw`` /
``.gpk``), else by content: a bundle is a tar (firmware/bundle.py), an artifact a zip
(core/artifact.py) -- and checks it the way a device will before anything is stored:

- an artifact with ``core.artifact.read`` (hashes; its signature against ``--trusted-key``);
- a bundle with ``firmware.verify.verify`` (the ``firmware verify`` checks: signed manifest, every
  member's sha256 and size) when the hub has ``--firmware-trusted-key``; without one it can only
  read the manifest (``firmware.verify.inspect``: names, version, board), and the devices, which
  always verify, are the judges.

Returns ``{"kind": "model"|"firmware", "name", "version", "suffix"}``; a file that is neither is a
typed ``fleet.artifact`` error.
"""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from core import artifact as gpk
from fleet.errors import FleetError
from firmware.verify import inspect, verify


def kind_of(path: Path, name: str | None) -> str:
    suffix = Path(name or path.name).suffix.lower()
    if suffix in (".fw", ".gpk"):
        return "firmware" if suffix == ".fw" else "model"
    if tarfile.is_tarfile(path):
        return "firmware"
    if zipfile.is_zipfile(path):
        return "model"
    raise FleetError(f"{name or path.name} is neither a model artifact (.gpk) nor a firmware bundle (.fw)",
                     code="fleet.artifact", where=name or str(path),
                     hint="deploy what 'ganglion convert' or 'ganglion firmware build' wrote")


def read_upload(path: Path, name: str | None, *, trusted_keys: list | None = None,
                firmware_keys: list | None = None) -> dict:
    where = name or path.name
    if kind_of(path, name) == "model":
        art = gpk.read(str(path), trusted_keys=trusted_keys, where=where)
        return {"kind": "model", "name": art.manifest.get("name"), "version": str(art.manifest.get("version")),
                "suffix": ".gpk"}
    if firmware_keys:
        manifest = verify(path, firmware_keys).data
    else:          # no keys on the hub: the devices verify (they never install an unverified bundle)
        manifest = inspect(path)["manifest"]
    return {"kind": "firmware", "name": f"firmware:{manifest.get('board')}", "version": str(manifest["version"]),
            "suffix": ".fw"}
