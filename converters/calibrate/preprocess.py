"""PreprocessSpec: how an image file becomes one model input tensor.

The spec is a small frozen dataclass, parsed from a JSON or TOML string or file, and stored in
the artifact manifest (``to_dict``) so the device applies exactly the preprocessing the model
was calibrated with. The steps, in order:

    1. decode (Pillow) and convert to ``channels``: "RGB", "BGR" (RGB decoded, then reversed) or "L"
    2. resize to ``size`` (H, W; default: the model input's) -- "stretch", or "crop": scale the
       shorter side to fit, then take the centre
    3. x = (pixel * scale - mean) / std, per channel, in float32
    4. lay out as ``layout`` "NCHW" or "NHWC" ("auto": from the input shape: channels-first when
       dim 1 equals the channel count)

Example (TOML):  scale = 0.00392156862745098   mean = [0.485, 0.456, 0.406]
                 std = [0.229, 0.224, 0.225]     layout = "NCHW"   resize = "crop"
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

try:
    import tomllib
except ImportError:          # Python 3.10
    import tomli as tomllib

from core.errors import UsageError

CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}
LAYOUTS = ("auto", "NCHW", "NHWC")
RESIZE = ("stretch", "crop")


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int] | None = None          # (height, width); None: from the model input
    resize: str = "stretch"
    channels: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "auto"

    def __post_init__(self):
        try:
            for name in ("mean", "std"):
                value = getattr(self, name)
                value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
                object.__setattr__(self, name, value)
            if self.size is not None:
                object.__setattr__(self, "size", tuple(int(v) for v in self.size))
            object.__setattr__(self, "scale", float(self.scale))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"bad preprocessing spec: {exc}", code="convert.preprocess",
                             hint="size: [h, w] integers; mean/std: numbers; scale: a number") from None
        problems = self._problems()
        if problems:
            raise UsageError("bad preprocessing spec: " + "; ".join(problems), code="convert.preprocess",
                             hint="see docs/quantization.md, 'Preprocessing spec'")

    def _problems(self) -> list[str]:
        problems = []
        if self.channels not in CHANNELS:
            problems.append(f"channels must be one of {list(CHANNELS)}, got {self.channels!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.resize not in RESIZE:
            problems.append(f"resize must be one of {list(RESIZE)}, got {self.resize!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            problems.append(f"size must be [height, width] > 0, got {list(self.size)}")
        count = CHANNELS.get(self.channels, 1)
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, count):
                problems.append(f"{name} needs 1 or {count} values for {self.channels}")
        if any(s == 0 for s in self.std):
            problems.append("std must not contain 0")
        if not self.scale > 0:
            problems.append(f"scale must be > 0, got {self.scale}")
        return problems

    @classmethod
    def parse(cls, source: str | Path | dict | None) -> "PreprocessSpec":
        """From a dict, a .json/.toml file path, or an inline JSON / TOML string."""
        if source is None:
            return cls()
        if isinstance(source, PreprocessSpec):
            return source
        if isinstance(source, dict):
            return cls.from_dict(source)
        text, kind = _read(source)
        try:
            data = json.loads(text) if kind == "json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"preprocessing spec is not valid {kind.upper()}: {exc}",
                             code="convert.preprocess", where=str(source)[:200]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown preprocessing key(s) {unknown}", code="convert.preprocess",
                             hint=f"known keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["size"] = list(self.size) if self.size else None
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    def resolve_layout(self, shape: tuple) -> str:
        """NCHW or NHWC for a rank-4 input ``shape`` (batch first)."""
        if self.layout != "auto":
            return self.layout
        count = CHANNELS[self.channels]
        return "NCHW" if shape[1] == count else "NHWC"

    def target_size(self, shape: tuple) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        layout = self.resolve_layout(shape)
        return (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])

    def apply(self, image, shape: tuple) -> np.ndarray:
        """A Pillow image -> float32 array shaped like ``shape`` (rank 4, batch 1)."""
        from PIL import Image     # optional: only image-folder calibration needs Pillow
        image = image.convert("L" if self.channels == "L" else "RGB")
        height, width = self.target_size(shape)
        if self.resize == "crop":
            ratio = max(height / image.height, width / image.width)
            scaled = (max(width, round(image.width * ratio)), max(height, round(image.height * ratio)))
            image = image.resize(scaled, Image.Resampling.BILINEAR)
            left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
            image = image.crop((left, top, left + width, top + height))
        else:
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        hwc = np.asarray(image, dtype=np.float32).reshape(height, width, -1)
        if self.channels == "BGR":
            hwc = hwc[..., ::-1]
        hwc = (hwc * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        layout = self.resolve_layout(shape)
        chw_or_hwc = hwc.transpose(2, 0, 1) if layout == "NCHW" else hwc
        return np.ascontiguousarray(chw_or_hwc[None], dtype=np.float32)


def _read(source: str | Path) -> tuple[str, str]:
    """(text, "json" | "toml") from a file path or an inline string."""
    text = str(source)
    path = Path(text) if len(text) < 4096 and "\n" not in text else None
    if path is not None and path.suffix.lower() in (".json", ".toml"):
        if not path.is_file():
            raise UsageError(f"preprocessing spec file not found: {path}", code="convert.preprocess")
        return path.read_text(), path.suffix.lower().lstrip(".")
    return text, "json" if text.lstrip().startswith("{") else "toml"
