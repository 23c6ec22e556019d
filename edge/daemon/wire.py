"""The parent <-> worker protocol: one frame per message, no pickle.

    frame  = u32 header length (little endian) | header (JSON, UTF-8) | tensor bytes...
    header = {"op": ..., "id": ..., "tensors": [{"name", "dtype", "shape"}, ...], ...}

Tensor payloads follow the header back to back, C-ordered, in the listed order -- or, for large
ones, live in a shared-memory segment named in the tensor's description with an ``offset``
(edge.daemon.shm). Decoding checks the dtype against a whitelist and that the byte counts add up
exactly (inside the frame, or inside the segment), so a corrupt or hostile frame is an error,
never an object constructed from attacker-chosen bytes. Frames travel over a
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


def encode(header: dict, tensors: dict[str, np.ndarray] | None = None, outbound=None) -> bytes:
    """A frame; with an ``shm.Outbound``, large tensors go to shared memory instead."""
    tensors = tensors or {}
    metas = outbound.place(tensors) if outbound is not None and tensors else None
    if metas is not None:
        raw = json.dumps(dict(header, tensors=metas), separators=(",", ":")).encode()
        return _LEN.pack(len(raw)) + raw
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    arrays = [a if a.flags.c_contiguous else a.copy(order="C") for a in map(np.asarray, tensors.values())]
    header = dict(header, tensors=[{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)}
                                   for n, a in zip(tensors, arrays)])
    raw = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(raw)), raw, *(a.tobytes() for a in arrays)])


def decode(frame: bytes, inbound=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and tensors; tensors in shared memory are views of it (needs an ``shm.Inbound``)."""
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
        if "shm" in meta:
            tensors[str(meta.get("name"))] = _shared(meta, size, inbound)
            continue
        if offset + size > len(frame):
            raise InputError("frame is shorter than its tensors", code="wire.tensor")
        tensors[str(meta.get("name"))] = np.frombuffer(view[offset:offset + size], dtype=dtype).reshape(shape)
        offset += size
    if offset != len(frame):
        raise InputError("frame has trailing bytes", code="wire.frame")
    return header, tensors


def _shared(meta: dict, size: int, inbound) -> np.ndarray:
    off = meta.get("offset")
    if inbound is None or not isinstance(meta.get("shm"), str) or not isinstance(off, int) or off < 0:
        raise InputError("bad shared-memory tensor description", code="wire.tensor")
    try:
        buf = inbound.buffer(meta["shm"])
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot attach shared memory: {exc}", code="wire.shm") from exc
    if off + size > len(buf):
        raise InputError("shared-memory tensor lies outside its segment", code="wire.tensor")
    return np.ndarray(tuple(meta["shape"]), dtype=meta["dtype"], buffer=buf, offset=off)
