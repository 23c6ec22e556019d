"""Resize nearest / bilinear with the coordinate modes exporters use."""
import numpy as np
import pytest

from tests.converters.ops import harness as H

X = {"x": (1, 3, 5, 6)}
EMPTY = np.array([], np.float32)

CASES = {
    "nearest_x2_asym_floor": (dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                   nearest_mode="floor"), [1, 1, 2, 2], "RESIZE_NEAREST_NEIGHBOR"),
    "nearest_half_pixel_ceil": (dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                     nearest_mode="round_prefer_ceil"), [1, 1, 2, 3], "RESIZE_NEAREST_NEIGHBOR"),
    "linear_half_pixel": (dict(mode="linear", coordinate_transformation_mode="half_pixel"), [1, 1, 2, 2],
                          "RESIZE_BILINEAR"),
    "linear_align_corners": (dict(mode="linear", coordinate_transformation_mode="align_corners"),
                             [1, 1, 3, 2], "RESIZE_BILINEAR"),
    "linear_asymmetric_down": (dict(mode="linear", coordinate_transformation_mode="asymmetric"),
                               [1, 1, 0.6, 0.5], "RESIZE_BILINEAR"),
    "linear_pytorch_half_pixel": (dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
                                  [1, 1, 2, 2], "RESIZE_BILINEAR"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_resize(case):
    attrs, scales, opcode = CASES[case]
    m = H.one_node("Resize", X, {"roi": EMPTY, "scales": np.array(scales, np.float32)}, **attrs)
    H.check(m, expect=[opcode], steps=1.01)


def test_resize_by_sizes():
    m = H.one_node("Resize", X, {"roi": EMPTY, "scales": EMPTY, "sizes": np.array([1, 3, 10, 4], np.int64)},
                   mode="linear", coordinate_transformation_mode="half_pixel")
    H.check(m, expect=["RESIZE_BILINEAR"], steps=1.01)
