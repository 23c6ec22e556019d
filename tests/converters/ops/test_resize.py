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
    "nearest_default_modes_x2": (dict(mode="nearest"), [1, 1, 2, 2], "RESIZE_NEAREST_NEIGHBOR"),
    "nearest_default_modes_x3x1": (dict(mode="nearest"), [1, 1, 3, 1], "RESIZE_NEAREST_NEIGHBOR"),
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


def test_nearest_default_modes_with_ties_are_refused():
    """half_pixel + round_prefer_floor downscaling hits .5 ties that TFLite rounds the other way."""
    from converters.errors import UnsupportedOpsError
    m = H.one_node("Resize", {"x": (1, 3, 6, 6)}, {"roi": EMPTY, "scales": EMPTY,
                                                   "sizes": np.array([1, 3, 4, 4], np.int64)}, mode="nearest")
    with pytest.raises(UnsupportedOpsError, match="nearest"):
        H.convert(m, "none")


@pytest.mark.parametrize("seed", range(30))
def test_random_resize_converts_exactly_or_refuses(seed):
    """Random mode / coordinate mode / rounding / size: the converter either matches onnxruntime
    or refuses with UnsupportedOpsError; it must never emit a near-miss."""
    from converters.errors import UnsupportedOpsError
    r = np.random.default_rng(400 + seed)
    mode = str(r.choice(["nearest", "linear"]))
    attrs = dict(mode=mode, coordinate_transformation_mode=str(
        r.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])))
    if mode == "nearest":
        attrs["nearest_mode"] = str(r.choice(["floor", "round_prefer_ceil", "round_prefer_floor", "ceil"]))
    x = (1, 2, int(r.integers(2, 7)), int(r.integers(2, 7)))
    if r.random() < 0.5:
        sizes = np.array([1, 2, int(r.integers(1, 13)), int(r.integers(1, 13))], np.int64)
        inits = {"roi": EMPTY, "scales": EMPTY, "sizes": sizes}
    else:
        inits = {"roi": EMPTY, "scales": np.array([1, 1, *r.choice([0.5, 1.0, 1.5, 2.0, 3.0], 2)], np.float32)}
    m = H.one_node("Resize", {"x": x}, inits, **attrs)
    try:
        H.convert(m, "none")
    except UnsupportedOpsError:
        return
    H.check(m, steps=1.01)


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_resize_across_opsets(opset):
    m = H.one_node("Resize", X, {"roi": EMPTY, "scales": np.array([1, 1, 2, 2], np.float32)}, opset=opset,
                   mode="linear", coordinate_transformation_mode="half_pixel")
    H.check(m, expect=["RESIZE_BILINEAR"], steps=1.01)
