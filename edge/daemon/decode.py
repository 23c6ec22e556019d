"""Bytes from a source -> model feeds (one sample). Formats are sniffed, never guessed by name alone.

    .npy       magic b"\\x93NUMPY"; header checked before any allocation (edge/npyfile.py)
    .npz       zip magic; sizes from the zip directory, members streamed with bounds (edge/npyfile.py)
    PNG/JPEG   magic bytes; decoded and preprocessed per the manifest (edge.preprocess)
    JSON       {"inputs": {name: nested list}} or {"input": [...]} or a bare nested list
    raw        exactly the byte size of the (single) input tensor, in its dtype, C order

Every failure is an ``InputError`` naming the format and what was expected, so the source
answers the request with an error and the daemon carries on.
"""
from __future__ import annotations

import json

import numpy as np

from core.errors import InputError
from edge import npyfile, preprocess
from edge.backends.base import check_shape

MAX_PAYLOAD = 64 * 2**20
MAX_JSON = 8 * 2**20          # a JSON list costs ~30x its text in Python objects before numpy sees it


def decode_payload(data: bytes, info) -> dict[str, np.ndarray]:
    if len(data) > MAX_PAYLOAD:
        raise InputError(f"payload is too large ({len(data)} bytes)", code="input.too_large")
    if data.startswith(preprocess.NPY_MAGIC):
        return to_feeds(npyfile.read_npy(data, max_bytes=MAX_PAYLOAD, expect=expect_shapes(info)), info)
    if data.startswith(npyfile.ZIP_MAGIC):
        return npyfile.read_npz(data, max_bytes=MAX_PAYLOAD, expect=expect_shapes(info))
    if preprocess.is_image(data):
        return image_feeds(data, info)
    head = data[:1].strip() or data.lstrip()[:1]
    if head in (b"{", b"["):
        return json_feeds(data, info)
    return raw_feeds(data, info)


def image_feeds(data: bytes, info) -> dict[str, np.ndarray]:
    _single(info)                 # a multi-input model is refused before anything is decoded
    return frame_feeds(preprocess.open_image(data), info)


def frame_feeds(image, info) -> dict[str, np.ndarray]:
    """A decoded image or a camera's HxWxC RGB frame -> the single input, preprocessed per the
    manifest (resize, layout, normalization, quantization)."""
    spec = _single(info)
    return {spec.name: preprocess.image_to_tensor(image, _concrete(spec.shape), info.preprocess, spec.dtype)}


def expect_shapes(info):
    """``expect(name, shape)`` for npyfile: a declared shape against the model input it feeds
    (unknown names pass: ``check_feeds`` reports every name problem at once)."""
    specs = {s.name: s for s in info.inputs}

    def expect(name: str, shape: tuple) -> None:
        spec = specs.get(name) or (info.inputs[0] if len(info.inputs) == 1 else None)
        if spec is not None:
            check_shape(spec, shape)
    return expect


def json_feeds(data: bytes, info) -> dict[str, np.ndarray]:
    if len(data) > MAX_JSON:
        raise InputError(f"JSON payload is too large ({len(data)} bytes, limit {MAX_JSON})",
                         code="input.too_large", hint="send .npy or raw bytes for large tensors")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:      # RecursionError: "[[[[...]]]]" nested too deep
        raise InputError(f"payload is not valid JSON: {type(exc).__name__}", code="input.json") from None
    if isinstance(obj, dict):
        obj = obj.get("inputs", obj.get("input"))
        if obj is None:
            raise InputError("JSON payload has no 'inputs'", code="input.json",
                             hint='send {"inputs": {"<name>": [[...]]}} or a bare nested list')
    try:
        if isinstance(obj, dict):
            return {str(k): np.asarray(v, dtype=np.float64) for k, v in obj.items()}
        return to_feeds(np.asarray(obj, dtype=np.float64), info)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InputError(f"JSON input is not a numeric array: {type(exc).__name__}: {str(exc)[:200]}",
                         code="input.json") from None


def raw_feeds(data: bytes, info) -> dict[str, np.ndarray]:
    spec = _single(info)
    shape = _concrete(spec.shape)
    want = int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
    if len(data) != want:
        raise InputError(f"raw tensor payload has {len(data)} bytes, expected {want} "
                         f"({spec.dtype} {list(shape)})", code="input.raw_size",
                         hint="send .npy, JSON, PNG/JPEG, or exactly the input's bytes")
    return {spec.name: np.frombuffer(data, dtype=spec.dtype).reshape(shape).copy()}


def to_feeds(value, info) -> dict[str, np.ndarray]:
    """An array (single-input models) or a dict of arrays -> feeds keyed by input name."""
    if isinstance(value, dict):
        return {str(k): np.asarray(v) for k, v in value.items()}
    spec = _single(info)
    return {spec.name: np.asarray(value)}


def _single(info):
    if len(info.inputs) != 1:
        raise InputError(f"the model has {len(info.inputs)} inputs; name them",
                         code="input.ambiguous", hint='use .npz or {"inputs": {name: ...}}')
    return info.inputs[0]


def _concrete(shape) -> tuple[int, ...]:
    return tuple(1 if d in (-1, None) else int(d) for d in shape)
