""".npy / .npz bytes -> arrays, with every size checked before anything is allocated.

``np.load`` trusts the header: a 385-byte .npy claiming shape (1e8, 1, 8, 8) makes it allocate
the whole array before it notices the data is missing (MemoryError), and an .npz member of
zeros deflates ~1000:1. Inputs come from strangers (a watched folder, an MQTT topic), so this
module parses the header itself (``numpy.lib.format``: magic, then a Python-literal dict, spec:
https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html) and refuses, as an
``InputError``, anything whose declared size does not equal the bytes it holds, that is larger
than ``max_bytes`` once decompressed, or whose dtype is not a plain number. Only then is the data
read -- an .npz member through a stream bounded by its declared size -- and wrapped
(``np.frombuffer``: no second copy).

``expect(name, shape)`` (optional) checks a declared shape against the model's input before the
data is read, so a file holding the wrong tensor costs one header parse.
"""
from __future__ import annotations

import io
import math
import zipfile
import zlib
from typing import Callable

import numpy as np
from numpy.lib import format as npformat

from core.errors import InputError

ZIP_MAGIC = b"PK\x03\x04"
MAX_HEADER = 10_000              # numpy's own default bound on the header dict
MAX_MEMBERS = 64
Expect = Callable[[str, tuple], None]


def read_npy(data: bytes, *, max_bytes: int, name: str = "array", expect: Expect | None = None) -> np.ndarray:
    """One .npy held in memory: header checked against the byte count, then wrapped without copying."""
    fh = io.BytesIO(data)
    shape, fortran, dtype = _header(fh, "the .npy")
    nbytes = _declared_bytes(shape, dtype, max_bytes, "the .npy")
    held = len(data) - fh.tell()
    if held != nbytes:
        raise InputError(f"the .npy declares {list(shape)} {dtype} ({nbytes} bytes) but holds {held} bytes",
                         code="input.npy", hint="the file is truncated or its header was altered")
    if expect is not None:
        expect(name, shape)
    return _wrap(data[fh.tell():], shape, fortran, dtype)


def read_npz(data: bytes, *, max_bytes: int, expect: Expect | None = None) -> dict[str, np.ndarray]:
    """An .npz (zip of .npy members): sizes from the zip directory first, then each member streamed."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise InputError(f"not a readable .npz: {exc}", code="input.npz") from None
    with zf:
        infos = zf.infolist()
        _check_directory(infos, max_bytes)
        try:
            return {info.filename[:-4]: _member(zf, info, max_bytes, expect) for info in infos}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError) as exc:      # RuntimeError: an "encrypted" flag; ValueError: bad offsets
            raise InputError(f"the .npz is damaged: {type(exc).__name__}: {exc}", code="input.npz") from None


def _check_directory(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if not infos or len(infos) > MAX_MEMBERS:
        raise InputError(f"an .npz holds 1..{MAX_MEMBERS} arrays, this one {len(infos)}", code="input.npz")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise InputError(f"the .npz would decompress to {total} bytes (limit {max_bytes})",
                         code="input.too_large", hint="send fewer or smaller arrays")
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise InputError(f"the .npz member {info.filename!r} is not an .npy array", code="input.npz")


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int, expect: Expect | None) -> np.ndarray:
    key = info.filename[:-4]
    with zf.open(info) as fh:      # ZipExtFile never yields more than the declared file_size
        shape, fortran, dtype = _header(fh, f"the .npz member {key!r}")
        nbytes = _declared_bytes(shape, dtype, max_bytes, f"the .npz member {key!r}")
        header_len = fh.tell()
        if info.file_size - header_len != nbytes:
            raise InputError(f"the .npz member {key!r} declares {nbytes} bytes of data, its zip entry "
                             f"{info.file_size - header_len}", code="input.npz")
        if expect is not None:
            expect(key, shape)
        body = fh.read(nbytes)
    if len(body) != nbytes:
        raise InputError(f"the .npz member {key!r} is truncated", code="input.npz")
    return _wrap(body, shape, fortran, dtype)


def _header(fh, what: str) -> tuple[tuple, bool, np.dtype]:
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
        else:            # 3.0 exists only for non-latin-1 field names: structured dtypes, refused anyway
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:     # numpy parses the header dict with ast/tokenize: TokenError, MemoryError, ...
        raise InputError(f"{what} is not a readable .npy array: {type(exc).__name__}: {exc}",
                         code="input.npy") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{what} holds {dtype}, not plain numbers", code="input.npy",
                         hint="send bool, integer or float arrays")
    return shape, fortran, dtype


def _declared_bytes(shape: tuple, dtype: np.dtype, max_bytes: int, what: str) -> int:
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise InputError(f"{what} declares an invalid shape {shape!r}", code="input.npy")
    nbytes = math.prod(shape) * dtype.itemsize         # Python ints: no overflow
    if nbytes > max_bytes:
        raise InputError(f"{what} declares {list(shape)} {dtype}: {nbytes} bytes (limit {max_bytes})",
                         code="input.too_large", hint="send fewer samples per file")
    return nbytes


def _wrap(body: bytes, shape: tuple, fortran: bool, dtype: np.dtype) -> np.ndarray:
    arr = np.frombuffer(body, dtype=dtype, count=math.prod(shape))
    return arr.reshape(shape, order="F" if fortran else "C")
