"""Turn raw inputs (decoded images, arrays) into model feeds, following the artifact's manifest.

The manifest's ``preprocessing`` block (all keys optional):

    {"resize": [H, W],            # default: the model input's spatial size
     "scale": 0.00392156,         # multiply first (1/255 maps uint8 pixels to [0, 1])
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],   # then (x - mean) / std, per channel
     "layout": "nchw" | "nhwc",   # default: guessed from the input shape (C in {1, 3} first -> nchw)
     "color": "rgb" | "bgr" | "gray",
    }
A uint8 input with no preprocessing block gets raw pixels; everything else gets float32, and
int8-input models are quantized by the backend with the input's own scale and zero point.

Images decode with Pillow (the ``images`` extra) or, failing that, OpenCV; a clear error names the
extra when neither is installed. Arrays that already have the input's shape pass through as is.
"""
from __future__ import annotations

import io

import numpy as np

from edge.errors import InputError, UsageError

PNG_MAGIC, JPEG_MAGIC, NPY_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY"
MAX_PIXELS = 64_000_000      # refuse decompression bombs before decoding


def is_image(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)


def decode_image(data: bytes, color: str = "rgb") -> np.ndarray:
    """PNG/JPEG bytes -> HxWxC uint8 (C = 3, or 1 for gray)."""
    try:
        from PIL import Image
    except ImportError:
        return _decode_cv2(data, color)
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise InputError(f"image is too large ({img.width}x{img.height})", code="input.image")
        img = img.convert("L" if color == "gray" else "RGB")
        arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image: {exc}", code="input.image") from exc
    arr = arr[..., None] if arr.ndim == 2 else arr
    return arr[..., ::-1].copy() if color == "bgr" else arr


def _decode_cv2(data: bytes, color: str) -> np.ndarray:
    try:
        import cv2
    except ImportError as exc:
        raise UsageError("decoding images needs Pillow or OpenCV", code="usage.images_extra",
                         hint="pip install 'ganglion-edge[images]'") from exc
    flag = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if arr is None:
        raise InputError("cannot decode image", code="input.image")
    arr = arr[..., None] if arr.ndim == 2 else arr
    return arr if color == "bgr" or color == "gray" else arr[..., ::-1].copy()


def layout_of(shape: tuple[int, ...], spec: dict) -> str:
    if spec.get("layout") in ("nchw", "nhwc"):
        return spec["layout"]
    return "nchw" if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3) else "nhwc"


def image_to_tensor(img: np.ndarray, input_shape: tuple[int, ...], spec: dict | None = None,
                    input_dtype: str = "float32") -> np.ndarray:
    """HxWxC uint8 -> a [1, ...] tensor for a 4-D image input, per the preprocessing spec."""
    spec = {k: v for k, v in (spec or {}).items() if k != "dtype"}
    if len(input_shape) != 4:
        raise InputError(f"an image was given but the model input has shape {list(input_shape)}",
                         code="input.not_image")
    layout = layout_of(input_shape, spec)
    h, w, c = (input_shape[2], input_shape[3], input_shape[1]) if layout == "nchw" else input_shape[1:4]
    size = spec.get("resize") or [h, w]
    img = _resize(img, int(size[0]), int(size[1]))
    if img.shape[2] != c:
        img = img.mean(axis=2, keepdims=True) if c == 1 else np.repeat(img[..., :1], c, axis=2)
    if img.shape[0] != h or img.shape[1] != w:
        raise InputError(f"resized image is {img.shape[:2]}, model wants {(h, w)}", code="input.shape")
    if input_dtype == "uint8" and not any(k in spec for k in ("scale", "mean", "std")):
        x = img                          # raw pixels for a uint8-input model with no preprocessing
    else:
        x = img.astype(np.float32) * float(spec.get("scale", 1.0))
        if "mean" in spec:
            x = x - np.asarray(spec["mean"], np.float32)
        if "std" in spec:
            x = x / np.asarray(spec["std"], np.float32)
        # int8 inputs stay float here: the backend quantizes with the input's own scale/zero point
    x = x[None]
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    try:
        from PIL import Image
        mode = "L" if img.shape[2] == 1 else "RGB"
        pil = Image.fromarray(img[..., 0] if mode == "L" else img, mode)
        out = np.asarray(pil.resize((w, h), Image.BILINEAR))
        return out[..., None] if out.ndim == 2 else out
    except ImportError:
        ys = (np.arange(h) * img.shape[0] / h).astype(int)
        xs = (np.arange(w) * img.shape[1] / w).astype(int)
        return img[ys][:, xs]              # nearest neighbour: good enough without Pillow


def load_npy(data: bytes) -> np.ndarray:
    """.npy bytes -> array, never unpickling objects."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a readable .npy array: {exc}", code="input.npy") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise InputError("the .npy holds no numeric array", code="input.npy")
    return arr
