"""Resize (nearest, bilinear) of the spatial dims of a 4-D tensor.

ONNX coordinate modes map onto TFLite's two flags (tensorflow/lite/kernels/internal/reference/
resize_*): ``asymmetric`` = neither, ``align_corners`` = align_corners, ``half_pixel`` (and
``pytorch_half_pixel`` when the output is larger than 1) = half_pixel_centers. Nearest rounding:
TFLite floors ``asymmetric`` coordinates and rounds half-pixel ones up, which is ONNX ``floor`` and
``round_prefer_ceil`` respectively.
"""
from __future__ import annotations

import numpy as np

from converters.lower.context import LowerContext, options
from converters.lower.registry import lowers

NEAREST_OK = {("asymmetric", "floor"), ("half_pixel", "round_prefer_ceil"),
              ("pytorch_half_pixel", "round_prefer_ceil"), ("align_corners", "round_prefer_ceil")}
LINEAR_OK = {"asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners"}


def _check_resize(node, graph):
    x, y = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
    if len(x) != 4 or x[:2] != y[:2]:
        return "only spatial resizing of 4-D tensors is supported"
    mode = node.attrs.get("mode", "nearest")
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest = node.attrs.get("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and (ctm, nearest) not in NEAREST_OK and not _tie_free(ctm, nearest, x, y):
        return (f"nearest resize with {ctm}/{node.attrs.get('nearest_mode')} is not supported "
                "(asymmetric/floor and half_pixel/round_prefer_ceil are)")
    if mode == "linear" and ctm not in LINEAR_OK:
        return f"linear resize with coordinate mode '{ctm}' is not supported"
    if ctm == "pytorch_half_pixel" and min(y[2:]) == 1:
        return "pytorch_half_pixel with an output size of 1 is not supported"
    if mode not in ("nearest", "linear"):
        return f"Resize mode '{mode}' is not supported (nearest, linear are)"
    scales = node.attrs.get("_scales")
    if scales and any(abs(scales[i] - y[i] / x[i]) > 1e-6 for i in (2, 3)):
        return (f"Resize scales {scales[2:]} differ from the size ratio of the output "
                f"({[y[i] / x[i] for i in (2, 3)]}); TFLite maps coordinates by the size ratio")
    if node.attrs.get("antialias", 0):
        return "antialiased Resize is not supported"
    return None


def _tie_free(ctm: str, nearest: str, x, y) -> bool:
    """Half-pixel nearest with an integer upscale never hits a .5 tie ((i + 0.5) / s is never an
    integer), so round_prefer_floor equals TFLite's rounding there (the ONNX default mode)."""
    integer_up = all(y[i] % x[i] == 0 for i in (2, 3))
    return (ctm in ("half_pixel", "pytorch_half_pixel") and nearest.startswith("round_prefer")
            and integer_up)


@lowers("Resize", since=11, check=_check_resize)
def resize(ctx: LowerContext, node) -> None:
    x, y = ctx.value(node.inputs[0]), ctx.output(node.outputs[0])
    size = ctx.const(np.array(ctx.onnx_shape(node.outputs[0])[2:], np.int32), "size")
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    flags = {"alignCorners": ctm == "align_corners",
             "halfPixelCenters": ctm in ("half_pixel", "pytorch_half_pixel")}
    if node.attrs.get("mode", "nearest") == "nearest":
        ctx.emit("RESIZE_NEAREST_NEIGHBOR", [x, size], [y],
                 options("ResizeNearestNeighborOptions", **flags))
    else:
        ctx.emit("RESIZE_BILINEAR", [x, size], [y], options("ResizeBilinearOptions", **flags))
