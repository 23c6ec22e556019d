"""Hostile inputs for the hardening tests, built at test time: lying .npy headers, .npz bombs."""
from __future__ import annotations

import io
import zipfile

import numpy as np


def npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    """A valid version-1.0 .npy header (magic, length, dict padded to 64 bytes) claiming ``shape``."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def lying_npy(shape: tuple, dtype: str = "<f4") -> bytes:
    """A header that claims ``shape`` over a few bytes of data (the 385-byte file of issue 9)."""
    return npy_header(shape, dtype) + b"\0" * 300


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr))
    return buf.getvalue()


def npz_bomb(mib: int, name: str = "x") -> bytes:
    """An .npz whose one member inflates to ``mib`` MiB of zeros (a float32 (N, 4) array): ~1000:1."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header((mib * 2**20 // 16, 4)))
            zeros = b"\0" * 2**20
            for _ in range(mib):
                fh.write(zeros)
    return buf.getvalue()


def zeros_zip(members: dict[str, bytes | int]) -> bytes:
    """A zip whose members are bytes, or an int: that many MiB of zeros, deflated (~1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            with zf.open(name, "w", force_zip64=True) as fh:
                if isinstance(body, int):
                    for _ in range(body):
                        fh.write(b"\0" * 2**20)
                else:
                    fh.write(body)
    return buf.getvalue()
