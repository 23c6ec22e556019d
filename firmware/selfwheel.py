"""Ganglion's own device code as a wheel, so a bundle carries the daemon that matches its model.

Like a Nerves firmware image carries the application, a bundle carries ``core``, ``edge``, ``firmware`` and
``boards`` (never ``converters``: a device has no onnx) as ``ganglion_edge-<version>-py3-none-any.whl``,
packed from the code that runs the build. The slot's ``site/`` then holds the exact daemon the
self-test ran with, and a revert brings back the old daemon together with the old model.

The wheel is a plain PEP 427 zip (METADATA, WHEEL, RECORD with sha256 of every file), written with
fixed timestamps so the same code gives the same bytes.
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from core import __version__

PACKAGES = ("core", "edge", "firmware", "boards")
SUFFIXES = (".py", ".toml")
DIST = "ganglion_edge"


def _files(code_root: Path) -> dict[str, bytes]:
    files = {}
    for package in PACKAGES:
        for path in sorted((code_root / package).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files[path.relative_to(code_root).as_posix()] = path.read_bytes()
    return files


def build_self_wheel(dest: str | Path, code_root: str | Path | None = None) -> Path:
    """Write the wheel into ``dest`` and return its path."""
    code_root = Path(code_root) if code_root else Path(__file__).resolve().parents[1]
    dist_info = f"{DIST}-{__version__}.dist-info"
    contents = _files(code_root)
    contents[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: ganglion-edge\nVersion: {__version__}\n"
                                         "Summary: Ganglion device runtime (packed by firmware build)\n").encode()
    contents[f"{dist_info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: ganglion firmware build\n"
                                      "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    record = [f"{name},sha256={_b64(data)},{len(data)}" for name, data in contents.items()]
    contents[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{DIST}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
