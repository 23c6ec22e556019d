"""The parent <-> worker protocol: one frame per message, no pickle.

Two frame forms share one decoder, told apart by the first four bytes:

    control frame = u32 header length (little endian, <= 1 MB) | header (JSON, UTF-8) | tensor bytes...
                    header = {"op": ..., "id": ..., "tensors": [{"name", "dtype", "shape"}, ...], ...}
    hot frame     = u32 MAGIC | u8 op | u8 tensor count | u16 descriptions length | i64 id
                    | descriptions: u8 shm-name length, shm name, then per tensor: u8 dtype code,
                      u8 ndim, u8 flags, u8 name length, u64 offset, i64 dims[ndim], name
                    | inline tensor bytes...

The hot form carries ``run`` and ``result`` messages -- every request crosses the pipe twice in
it -- and exists because building and parsing a JSON header cost more than the pipe round trip
itself (measured: ~15 us of a ~160 us echo round trip). A stream of requests repeats the same
descriptions, so both ends keep a small cache from description bytes to their parsed (and
checked) form. Anything else (ready, fatal, error, stop) uses the JSON form, where flexibility
matters more than microseconds.

Tensor payloads follow the descriptions back to back, C-ordered, in the listed order -- or, for
large ones, live in a shared-memory segment (edge.daemon.shm) at the described offset. Decoding
checks the dtype against a whitelist and that the byte counts add up exactly (inside the frame,
or inside the segment), so a corrupt or hostile frame is an ``InputError``, never an object
constructed from attacker-chosen bytes. Frames travel over a ``multiprocessing.Pipe`` with
``send_bytes``/``recv_bytes``.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from core.errors import InputError

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool")
DTYPE_CODE = {name: i for i, name in enumerate(DTYPES)}
# keyed by numpy dtype objects too: ``arr.dtype.name`` is computed in Python on every access
NP_CODE = {np.dtype(name): i for i, name in enumerate(DTYPES)}
ITEMSIZE = {name: np.dtype(name).itemsize for name in DTYPES}
HOT_OPS = ("run", "result")
OP_CODE = {name: i for i, name in enumerate(HOT_OPS)}
MAX_HEADER = 1 << 20
MAGIC = 0xFF474E31            # > MAX_HEADER, so it can never be a control frame's header length
MAX_NDIM = 32
_LEN = struct.Struct("<I")
_HOT = struct.Struct("<IBBHq")
_TENSOR = struct.Struct("<BBBBQ")
SHM_FLAG = 1
CACHE_SIZE = 64               # distinct tensor layouts remembered per process (cleared when full)
_encoded: dict[tuple, bytes] = {}
_decoded: dict[bytes, tuple] = {}


def encode(header: dict, tensors: dict | None = None, outbound=None, slot: int = 0) -> bytes:
    """A frame; with an ``shm.Outbound``, large tensors go to its segment number ``slot``.

    A tensor may also be given as a list of arrays, its parts along the batch axis (a micro-batch's
    requests): they are copied straight into shared memory, never concatenated first."""
    tensors = tensors or {}
    metas = outbound.place(tensors, slot) if outbound is not None and tensors else None
    if metas is None:
        tensors = {k: stack(v) for k, v in tensors.items()}
    if _hot(header, tensors):
        frame = _encode_hot(header, tensors, metas)
        if frame is not None:
            return frame
    if metas is not None:
        raw = json.dumps(dict(header, tensors=metas), separators=(",", ":")).encode()
        return _LEN.pack(len(raw)) + raw
    arrays = _contiguous(tensors)
    header = dict(header, tensors=[{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)}
                                   for n, a in zip(tensors, arrays)])
    raw = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(raw)), raw, *(a.tobytes() for a in arrays)])


def stack(value) -> np.ndarray:
    """A tensor given as parts along the batch axis, as one array (an array stays as it is)."""
    if isinstance(value, list):
        return value[0] if len(value) == 1 else np.concatenate(value, axis=0)
    return value


def _hot(header: dict, tensors: dict) -> bool:
    return (len(header) == 2 and header.get("op") in OP_CODE and type(header.get("id")) is int
            and len(tensors) < 256
            and all((t[0] if isinstance(t, list) else np.asarray(t)).dtype in NP_CODE for t in tensors.values()))


def _contiguous(tensors: dict) -> list[np.ndarray]:
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    return [a if a.flags.c_contiguous else a.copy(order="C") for a in map(np.asarray, tensors.values())]


def _encode_hot(header: dict, tensors: dict, metas: list[dict] | None) -> bytes | None:
    """The hot frame, or None when the tensors do not fit its fields (then JSON carries them)."""
    if metas:
        arrays = []
        key = (metas[0]["shm"], *((m["name"], m["dtype"], tuple(m["shape"]), m["offset"]) for m in metas))
    else:
        arrays = _contiguous(tensors)
        key = tuple((name, a.dtype, a.shape) for name, a in zip(tensors, arrays))
    desc = _encoded.get(key, b"")
    if desc == b"":
        desc = _describe(tensors, metas, arrays)
        if len(_encoded) >= CACHE_SIZE:
            _encoded.clear()
        _encoded[key] = desc
    if desc is None:
        return None
    head = _HOT.pack(MAGIC, OP_CODE[header["op"]], len(tensors), len(desc), header["id"])
    return b"".join([head, desc, *(a.tobytes() for a in arrays)])


def _describe(tensors: dict, metas: list[dict] | None, arrays: list[np.ndarray]) -> bytes | None:
    shm_name = (metas[0]["shm"] if metas else "").encode()
    if len(shm_name) > 255:
        return None
    parts = [bytes([len(shm_name)]), shm_name]
    for i, name in enumerate(tensors):
        if metas:
            shape, code, flags, offset = metas[i]["shape"], DTYPE_CODE[metas[i]["dtype"]], SHM_FLAG, metas[i]["offset"]
        else:
            shape, code, flags, offset = arrays[i].shape, NP_CODE[arrays[i].dtype], 0, 0
        raw_name = name.encode()
        if len(raw_name) > 255 or len(shape) > MAX_NDIM:
            return None
        parts.append(_TENSOR.pack(code, len(shape), flags, len(raw_name), offset))
        parts.append(struct.pack(f"<{len(shape)}q", *shape))
        parts.append(raw_name)
    desc = b"".join(parts)
    return desc if len(desc) <= 0xFFFF else None


def decode(frame: bytes, inbound=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and tensors; tensors in shared memory are views of it (needs an ``shm.Inbound``)."""
    if len(frame) < _LEN.size:
        raise InputError("short frame", code="wire.frame")
    (n,) = _LEN.unpack_from(frame)
    if n == MAGIC:
        try:
            return _decode_hot(frame, inbound)
        except (struct.error, UnicodeDecodeError, IndexError) as exc:
            raise InputError(f"malformed frame: {exc}", code="wire.frame") from exc
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
        if not isinstance(meta, dict):
            raise InputError(f"bad tensor description {meta!r}", code="wire.tensor")
        dtype, shape = meta.get("dtype"), meta.get("shape")
        size = _size(dtype, shape, meta)
        if "shm" in meta:
            tensors[str(meta.get("name"))] = _shared(meta.get("shm"), meta.get("offset"), dtype, shape, size,
                                                     inbound)
            continue
        offset = _inline(tensors, str(meta.get("name")), view, offset, dtype, shape, size)
    if offset != len(frame):
        raise InputError("frame has trailing bytes", code="wire.frame")
    return header, tensors


def _decode_hot(frame: bytes, inbound) -> tuple[dict, dict[str, np.ndarray]]:
    _, op, count, desc_len, rid = _HOT.unpack_from(frame)
    if op >= len(HOT_OPS):
        raise InputError(f"unknown op code {op}", code="wire.frame")
    pos = _HOT.size + desc_len
    if pos > len(frame):
        raise InputError("frame is shorter than its descriptions", code="wire.frame")
    desc = bytes(frame[_HOT.size:pos])
    parsed = _decoded.get(desc)
    if parsed is None or parsed[0] != count:
        parsed = (count, *_parse(desc, count))
        if len(_decoded) >= CACHE_SIZE:
            _decoded.clear()
        _decoded[desc] = parsed
    _, shm_name, descs = parsed
    view, tensors = memoryview(frame), {}
    for name, dtype, shape, shared, shm_off, size in descs:
        if shared:
            tensors[name] = _shared(shm_name, shm_off, dtype, shape, size, inbound)
        else:
            pos = _inline(tensors, name, view, pos, dtype, shape, size)
    if pos != len(frame):
        raise InputError("frame has trailing bytes", code="wire.frame")
    return {"op": HOT_OPS[op], "id": rid}, tensors


def _parse(desc: bytes, count: int) -> tuple[str, list[tuple]]:
    """Checked tensor descriptions of a hot frame (cached by their bytes)."""
    shm_len = desc[0]
    shm_name = desc[1:1 + shm_len].decode()
    pos, descs = 1 + shm_len, []
    for _ in range(count):
        code, ndim, flags, name_len, shm_off = _TENSOR.unpack_from(desc, pos)
        pos += _TENSOR.size
        if code >= len(DTYPES) or ndim > MAX_NDIM:
            raise InputError("bad tensor description in frame", code="wire.tensor")
        shape = list(struct.unpack_from(f"<{ndim}q", desc, pos))
        pos += 8 * ndim
        name = desc[pos:pos + name_len].decode()
        pos += name_len
        size = _size(DTYPES[code], shape, {"name": name, "shape": shape})
        descs.append((name, DTYPES[code], shape, flags & SHM_FLAG, shm_off, size))
    if pos != len(desc):
        raise InputError("tensor descriptions do not add up", code="wire.frame")
    return shm_name, descs


def _size(dtype, shape, meta) -> int:
    if dtype not in DTYPE_CODE or not isinstance(shape, list) or not all(
            type(d) is int and d >= 0 for d in shape):
        raise InputError(f"bad tensor description {meta!r}", code="wire.tensor")
    size = ITEMSIZE[dtype]
    for d in shape:
        size *= d
    return size


def _inline(tensors: dict, name: str, view: memoryview, offset: int, dtype: str, shape: list, size: int) -> int:
    if offset + size > len(view):
        raise InputError("frame is shorter than its tensors", code="wire.tensor")
    tensors[name] = np.frombuffer(view[offset:offset + size], dtype=dtype).reshape(shape)
    return offset + size


def _shared(name, off, dtype: str, shape: list, size: int, inbound) -> np.ndarray:
    if inbound is None or not isinstance(name, str) or not name or type(off) is not int or off < 0:
        raise InputError("bad shared-memory tensor description", code="wire.tensor")
    try:
        buf = inbound.buffer(name)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot attach shared memory: {exc}", code="wire.shm") from exc
    if off + size > len(buf):
        raise InputError("shared-memory tensor lies outside its segment", code="wire.tensor")
    return np.ndarray(tuple(shape), dtype=dtype, buffer=buf, offset=off)
