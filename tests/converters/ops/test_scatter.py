"""ScatterND / ScatterElements with constant indices (slice assignment in PyTorch exports: the
ring-buffer caches of streaming audio models), float and int8 in LiteRT against onnxruntime."""
import numpy as np
import pytest
from onnx import helper

from converters.errors import UnsupportedOpsError
from tests.converters.ops import harness as H


def _slice_indices(shape, axis: int, start: int, stop: int) -> np.ndarray:
    """The ScatterND indices torch writes for ``data[..., start:stop, ...] = updates``."""
    region = [range(s) for s in shape]
    region[axis] = range(start, stop)
    grid = np.stack(np.meshgrid(*region, indexing="ij"), axis=-1)
    return grid.astype(np.int64)


CASES = {
    # id: (op, data shape, indices, updates shape, attrs); updates are scaled by 3 first, so data
    # and updates have different ranges in int8
    "nd_cache_tail": ("ScatterND", (1, 4, 6, 5), _slice_indices((1, 4, 6, 5), 2, 4, 6), (1, 4, 2, 5), {}),
    "nd_rows": ("ScatterND", (6, 4), np.array([[1], [4]], np.int64), (2, 4), {}),
    "nd_first_of_stack": ("ScatterND", (2, 3, 8), np.array([[0]], np.int64), (1, 3, 8), {}),
    "nd_points_negative": ("ScatterND", (3, 5), np.array([[0, -1], [2, 1], [1, 3]], np.int64), (3,), {}),
    "elements_axis1": ("ScatterElements", (3, 6), np.array([[0, 5], [2, -1], [4, 1]], np.int64), (3, 2),
                       dict(axis=1)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_scatter_constant_indices(case):
    op, data_shape, indices, upd_shape, attrs = CASES[case]
    nodes = [helper.make_node("Mul", ["u", "three"], ["u3"]),
             helper.make_node(op, ["x", "idx", "u3"], ["s"], **attrs),
             helper.make_node("Relu", ["s"], ["y"])]
    m = H.model(nodes, {"x": data_shape, "u": upd_shape}, ["y"],
                {"idx": indices, "three": np.float32(3.0)}, opset=16)
    H.check(m, expect=["GATHER", "CONCATENATION"], forbid=["SCATTER_ND"])


def test_scatter_after_conv_in_channels_last():
    """A scatter into a Conv's output (stored NHWC): the map follows the stored layout."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ScatterND", ["c", "idx", "u"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 6, 7), "u": (1, 2, 6, 7)}, ["y"],
                {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
                 "w2": rng.normal(0, 0.3, (5, 4, 1, 1)).astype(np.float32),
                 "idx": _slice_indices((1, 4, 6, 7), 1, 1, 3)})
    H.check(m, expect=["GATHER"])


@pytest.mark.parametrize("why", ["runtime_indices", "reduction"])
def test_scatter_refused_with_reason(why):
    """Run-time indices and reductions: a typed refusal that names the node and says why."""
    inputs = {"x": (4, 3), "u": (2, 3)}
    inits = {"idx": np.array([[0], [2]], np.int64)}
    attrs = {"reduction": "add"} if why == "reduction" else {}
    if why == "runtime_indices":
        nodes = [helper.make_node("Cast", ["xi"], ["idx"], to=7),
                 helper.make_node("ScatterND", ["x", "idx", "u"], ["y"])]
        inputs["xi"] = (2, 1)
        inits = {}
    else:
        nodes = [helper.make_node("ScatterND", ["x", "idx", "u"], ["y"], **attrs)]
    m = H.model(nodes, inputs, ["y"], inits, opset=16)
    with pytest.raises(UnsupportedOpsError) as err:
        H.convert(m, "none")
    assert "ScatterND" in str(err.value)
    assert ("run time" if why == "runtime_indices" else "reduction 'add'") in str(err.value), err.value
