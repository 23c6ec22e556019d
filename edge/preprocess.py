"""Turn raw inputs (encoded images) into model feeds, exactly as the artifact was calibrated.

The manifest's ``preprocessing`` block is written by the converter
(``converters.calibrate.preprocess.PreprocessSpec.to_dict``); the device must apply the very same
steps or the int8 ranges no longer fit the data. The keys, all optional:

    size      [H, W] to resize to (default: the model input's spatial size)
    resize    "stretch" (default) or "crop": scale the shorter side to fit, then take the centre
    channels  "RGB" (default), "BGR" (decoded RGB, then reversed) or "L" (gray)
    scale     multiply pixels first (default 1/255)
    mean, std per channel (1 value or one per channel): x = (pixel * scale - mean) / std
    layout    "auto" (default: channels-first when dim 1 equals the channel count), "NCHW", "NHWC"

Without a block, a uint8-input model gets raw pixels and a float model the defaults above with
the channel count taken from its input. Decoding uses Pillow (the ``images`` extra); the resize is
Pillow's bilinear, as in the converter. This module must not import ``converters`` (a device has
no onnx); tests/edge/test_preprocess.py checks that both give identical tensors.
"""
from __future__ import annotations

import io

import numpy as np

from core.errors import InputError, UsageError

PNG_MAGIC, JPEG_MAGIC, NPY_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY"
MAX_PIXELS = 64_000_000      # refuse decompression bombs before decoding
CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}


def is_image(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)


def _pil():
    try:
        from PIL import Image     # optional: the [images] extra, only image inputs need it
    except ImportError as exc:
        raise UsageError("decoding images needs Pillow", code="usage.images_extra",
                         hint="pip install 'ganglion-edge[images]'") from exc
    return Image


def open_image(data: bytes):
    """PNG/JPEG bytes -> a Pillow image (checked for size before its pixels are decoded)."""
    Image = _pil()
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise InputError(f"image is too large ({img.width}x{img.height})", code="input.image")
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image: {exc}", code="input.image") from exc
    return img


def spec_for(block: dict | None, input_shape: tuple[int, ...], input_dtype: str) -> dict | None:
    """The effective spec; None means 'raw uint8 pixels'."""
    if block:
        spec = {"resize": "stretch", "channels": "RGB", "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0],
                "layout": "auto", "size": None}
        spec.update({k: v for k, v in block.items() if v is not None})
        return spec
    if len(input_shape) != 4:
        raise InputError(f"an image was given but the model input has shape {list(input_shape)}",
                         code="input.not_image")
    first = input_shape[1] in (1, 3)
    count = input_shape[1] if first else input_shape[3]
    channels = "L" if count == 1 else "RGB"
    if input_dtype == "uint8":
        return None
    return {"resize": "stretch", "channels": channels, "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0],
            "layout": "auto", "size": None}


def image_to_tensor(img, input_shape: tuple[int, ...], block: dict | None = None,
                    input_dtype: str = "float32") -> np.ndarray:
    """A Pillow image (or an HxWxC uint8 array, RGB) -> a [1, ...] tensor for a rank-4 input."""
    if len(input_shape) != 4:
        raise InputError(f"an image was given but the model input has shape {list(input_shape)}",
                         code="input.not_image")
    Image = _pil()
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    spec = spec_for(block, input_shape, input_dtype)
    if spec is None:
        return _raw_pixels(img, input_shape)
    count = CHANNELS.get(spec["channels"])
    if count is None:
        raise InputError(f"unknown channels {spec['channels']!r} in the manifest", code="input.preprocess")
    layout = _layout(spec["layout"], input_shape, count)
    h, w = spec["size"] or ((input_shape[2], input_shape[3]) if layout == "NCHW" else input_shape[1:3])
    img = _resize(img.convert("L" if spec["channels"] == "L" else "RGB"), int(h), int(w), spec["resize"])
    hwc = np.asarray(img, dtype=np.float32).reshape(int(h), int(w), -1)
    if spec["channels"] == "BGR":
        hwc = hwc[..., ::-1]
    hwc = (hwc * np.float32(spec["scale"]) - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    out = hwc.transpose(2, 0, 1) if layout == "NCHW" else hwc
    return np.ascontiguousarray(out[None], dtype=np.float32)


def _layout(layout: str, shape: tuple[int, ...], count: int) -> str:
    if layout in ("NCHW", "NHWC"):
        return layout
    return "NCHW" if shape[1] == count else "NHWC"


def _resize(img, h: int, w: int, mode: str):
    Image = _pil()
    if mode == "crop":
        ratio = max(h / img.height, w / img.width)
        scaled = (max(w, round(img.width * ratio)), max(h, round(img.height * ratio)))
        img = img.resize(scaled, Image.Resampling.BILINEAR)
        left, top = (scaled[0] - w) // 2, (scaled[1] - h) // 2
        return img.crop((left, top, left + w, top + h))
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _raw_pixels(img, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 models without a spec: resized pixels, laid out like the input."""
    nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
    c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
    img = _resize(img.convert("L" if c == 1 else "RGB"), h, w, "stretch")
    hwc = np.asarray(img, dtype=np.uint8).reshape(h, w, c)
    return np.ascontiguousarray((hwc.transpose(2, 0, 1) if nchw else hwc)[None])
