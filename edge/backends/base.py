"""What every model backend offers: tensor specs, the ``ModelBackend`` protocol, int8 I/O helpers.

A backend is deliberately small (nerves_runtime's two-function behaviour): ``inputs()``,
``outputs()`` and ``run(feeds) -> outputs``. Feeds are batched along axis 0; a backend either
runs the batch in one call (a dynamic or resizable batch dimension) or loops over samples --
callers never need to know which. Feed checking and int8 (de)quantization live here, once, so
LiteRT, ONNX Runtime and the in-memory backend all reject bad input with the same typed error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from core.errors import InputError

INTEGER_IO = ("int8", "uint8", "int16")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape[0]`` is the batch dimension (-1 when dynamic)."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float | None = None        # int8 quant params, when the tensor is quantized
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype in INTEGER_IO and self.scale is not None and self.scale > 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        """The inverse of ``to_dict`` (a worker's ready message carries its specs that way)."""
        return cls(d["name"], d["dtype"], tuple(d["shape"]), d.get("scale"), d.get("zero_point"))


@runtime_checkable
class ModelBackend(Protocol):
    """The interface the daemon, bench and firmware self-test use."""
    name: str                 # "litert", "onnxruntime", "memory"
    events: list[dict]        # things worth reporting that happened while opening (delegate fallback)

    def inputs(self) -> list[TensorSpec]: ...

    def outputs(self) -> list[TensorSpec]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class SpecsMixin:
    """``inputs()``/``outputs()`` from the ``_in``/``_out`` spec lists every backend keeps (copies,
    so a caller cannot edit a backend's specs)."""
    _in: list[TensorSpec]
    _out: list[TensorSpec]

    def inputs(self) -> list[TensorSpec]:
        return list(self._in)

    def outputs(self) -> list[TensorSpec]:
        return list(self._out)


@dataclass
class BackendInfo:
    """Descriptive facts about an opened backend, for status replies and ``ganglion bench``."""
    backend: str
    model: str
    threads: int | None = None
    delegate: str | None = None
    providers: list[str] = field(default_factory=list)
    manifest: dict | None = None


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float -> the tensor's integer type with its scale / zero point (round half to even, clip)."""
    info = np.iinfo(np.dtype(spec.dtype))
    q = np.round(np.asarray(x, dtype=np.float32) / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return ((q.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)


def check_feeds(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Validate names, per-sample shapes and batch sizes; quantize float feeds for integer inputs.

    Returns the feeds in the model's dtypes and the batch size. Raises ``InputError`` naming the
    input, the expected and the received shape, so a bad request is answered, never crashes.
    """
    names = {s.name for s in specs}
    unknown = set(feeds) - names
    missing = names - set(feeds)
    if len(specs) == 1 and len(feeds) == 1 and unknown:
        feeds = {specs[0].name: next(iter(feeds.values()))}   # a lone unnamed tensor is fine
    elif unknown or missing:
        raise InputError(f"feeds do not match the model inputs (unknown: {sorted(unknown)}, "
                         f"missing: {sorted(missing)})", code="input.feed_names",
                         hint=f"the model takes: {', '.join(sorted(names))}")
    out, batch = {}, None
    for spec in specs:
        arr = np.asarray(feeds[spec.name])
        if not spec.shape:                                    # 0-d (a sample rate): no batch axis
            if arr.size != 1:
                raise InputError(f"input {spec.name!r} is a scalar, got shape {list(arr.shape)}",
                                 where=spec.name, code="input.shape")
            _check_finite(arr, spec)
            out[spec.name] = _to_dtype(arr.reshape(()), spec)
            continue
        if arr.ndim == len(spec.shape) - 1:
            arr = arr[None]                                   # one sample without its batch axis
        check_shape(spec, arr.shape)
        if batch is not None and arr.shape[0] != batch:
            raise InputError("inputs disagree on the batch size", where=spec.name, code="input.batch")
        batch = arr.shape[0]
        _check_finite(arr, spec)
        out[spec.name] = _to_dtype(arr, spec)
        if out[spec.name].dtype.kind == "f" and out[spec.name].dtype != arr.dtype:
            _check_finite(out[spec.name], spec)                # float64 1e300 is inf in float32
    return out, int(batch if batch is not None else 1 if specs else 0)


def _check_finite(arr: np.ndarray, spec: TensorSpec) -> None:
    """NaN/inf would be quantized to an arbitrary integer (or run) and answered with confidence."""
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(arr).all()
        if not finite:
            raise InputError(f"input {spec.name!r} holds NaN or infinite values", where=spec.name,
                             code="input.not_finite", hint="send finite numbers only")


def check_shape(spec: TensorSpec, shape: tuple) -> None:
    """A (batched) shape against an input spec: rank, per-sample dims, and at least one element.

    Used on feeds and, before anything is allocated, on the shape an .npy header declares."""
    shape = tuple(shape)
    if len(shape) == len(spec.shape) - 1:
        shape = (1, *shape)
    if len(shape) != len(spec.shape) or _mismatch(shape[1:], spec.sample_shape):
        raise InputError(f"input {spec.name!r} has shape {list(shape)}, expected "
                         f"[N, {', '.join(map(str, spec.sample_shape))}]", where=spec.name,
                         code="input.shape")
    if 0 in shape:
        raise InputError(f"input {spec.name!r} is empty (shape {list(shape)})", where=spec.name,
                         code="input.empty", hint="send at least one sample")


def _mismatch(got: tuple, want: tuple) -> bool:
    return any(w not in (-1, None) and g != w for g, w in zip(got, want))


_NP_DTYPES: dict[str, np.dtype] = {}


def _np_dtype(name: str) -> np.dtype:
    """``np.dtype(name)``, remembered: parsing the name costs as much as the rest of a check."""
    dt = _NP_DTYPES.get(name)
    if dt is None:
        dt = _NP_DTYPES[name] = np.dtype(name)
    return dt


def _to_dtype(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if arr.dtype == _np_dtype(spec.dtype):
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if spec.quantized and arr.dtype.kind == "f":
        return quantize(arr, spec)
    if arr.dtype.kind in "biuf" and np.dtype(spec.dtype).kind in "biuf":
        if arr.dtype.kind == "f" and np.dtype(spec.dtype).kind in "iu":
            raise InputError(f"input {spec.name!r} is float but the model wants {spec.dtype} "
                             "without quantization parameters", where=spec.name, code="input.dtype")
        with np.errstate(over="ignore", invalid="ignore"):     # out-of-range floats: caught as not finite
            return arr.astype(spec.dtype, order="C")          # (np.ascontiguousarray makes a 0-d array 1-d)
    raise InputError(f"input {spec.name!r} has dtype {arr.dtype}, expected {spec.dtype}",
                     where=spec.name, code="input.dtype")


def split_batch(feeds: dict[str, np.ndarray], batch: int):
    """Yield one-sample feeds (batch axis kept) for backends that cannot run a batch at once."""
    for i in range(batch):
        yield {k: v[i:i + 1] if v.ndim else v for k, v in feeds.items()}   # 0-d: the same for all


def concat_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def dequantize_outputs(specs: list[TensorSpec], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integer outputs with quant params -> float32; others unchanged."""
    by_name = {s.name: s for s in specs}
    return {k: dequantize(v, by_name[k]) if k in by_name and by_name[k].quantized else v
            for k, v in outputs.items()}
