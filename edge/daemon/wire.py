"""The parent <-> worker protocol: one frame per message, no pickle.

    frame  = u32 header length (little endian) | header (JSON, UTF-8) | tensor bytes...
    header = {"op": ..., "id": ..., "tensors": [{"name", "dtype", "shape"}, ...], ...}

Tensor payloads follow the header back to back, C-ordered, in the listed order. Decoding checks
the dtype against a whitelist and that the byte counts add up exactly, so a corrupt or hostile
frame is an error, never an object constructed from attacker-chosen bytes. Frames travel over a
``multiprocessing.Pipe`` with ``send_bytes``/``recv_bytes``.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from edge.errors import InputError

DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
                    "int64", "bool"})
MAX_HEADER = 1 << 20
_LEN = struct.Struct("<I")


def encode(header: dict, tensors: dict[str, np.ndarray] | None = None) -> bytes:
    tensors = tensors or {}
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    arrays = [a if a.flags.c_contiguous else a.copy(order="C") for a in map(np.asarray, tensors.values())]
    header = dict(header, tensors=[{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)}
                                   for n, a in zip(tensors, arrays)])
    raw = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(raw)), raw, *(a.tobytes() for a in arrays)])


def decode(frame: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    if len(frame) < _LEN.size:
        raise InputError("short frame", code="wire.frame")
    (n,) = _LEN.unpack_from(frame)
    if n > MAX_HEADER or _LEN.size + n > len(frame):
        raise InputError("frame header length is out of bounds", code="wire.frame")
    try:
        header = json.loads(frame[_LEN.size:_LEN.size + n])
    except ValueError as exc:
        raise InputError(f"frame header is not JSON: {exc}", code="wire.frame") from exc
    if not isinstance(header, dict):
        raise InputError("frame header is not an object", code="wire.frame")
    offset, tensors = _LEN.size + n, {}
    view = memoryview(frame)
    for meta in header.get("tensors", []):
        dtype, shape = meta.get("dtype"), meta.get("shape")
        if dtype not in DTYPES or not isinstance(shape, list) or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise InputError(f"bad tensor description {meta!r}", code="wire.tensor")
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if offset + size > len(frame):
            raise InputError("frame is shorter than its tensors", code="wire.tensor")
        tensors[str(meta.get("name"))] = np.frombuffer(view[offset:offset + size], dtype=dtype).reshape(shape)
        offset += size
    if offset != len(frame):
        raise InputError("frame has trailing bytes", code="wire.frame")
    return header, tensors
