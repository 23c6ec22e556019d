"""Pools and reductions (channels-last; explicit and SAME padding; ceil_mode; 1-D)."""
import numpy as np
import pytest

from tests.converters.ops import harness as H

X = {"x": (1, 4, 9, 9)}

# One int8 pool (input, slices, concat and output share params): half a step from quantizing the
# input, half from rounding the average -- one step, plus float slack. The earlier lowering
# (zero PAD, VALID pool, MUL by k*k/count) was off by up to 2.3 steps here at the corners.
ONE_POOL_STEPS = 1.01

POOLS = {
    "max_2x2": ("MaxPool", X, dict(kernel_shape=[2, 2], strides=[2, 2]), "MAX_POOL_2D"),
    "max_3x3_pad1_s2": ("MaxPool", X, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                        "MAX_POOL_2D"),
    "max_asym_pad": ("MaxPool", X, dict(kernel_shape=[3, 3], pads=[0, 0, 2, 2]), "SLICE"),
    "max_ceil": ("MaxPool", X, dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), "MAX_POOL_2D"),
    "max_same_upper": ("MaxPool", X, dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
                       "MAX_POOL_2D"),
    "avg_2x2": ("AveragePool", X, dict(kernel_shape=[2, 2], strides=[2, 2]), "AVERAGE_POOL_2D"),
    "avg_same_exclude_pad": ("AveragePool", X, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                             "AVERAGE_POOL_2D"),
    "avg_include_pad": ("AveragePool", X, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                               count_include_pad=1), "PAD"),
    "max_1d": ("MaxPool", {"x": (1, 3, 12)}, dict(kernel_shape=[3], strides=[2]), "MAX_POOL_2D"),
    "avg_1d": ("AveragePool", {"x": (1, 3, 12)}, dict(kernel_shape=[2], strides=[2]), "AVERAGE_POOL_2D"),
    "max_1d_pads": ("MaxPool", {"x": (1, 3, 12)}, dict(kernel_shape=[3], strides=[2], pads=[2, 0]),
                    "SLICE"),
    "avg_1d_pads": ("AveragePool", {"x": (1, 3, 12)}, dict(kernel_shape=[3], pads=[0, 2]), "SLICE"),
    "global_avg": ("GlobalAveragePool", X, {}, "MEAN"),
    "global_max": ("GlobalMaxPool", X, {}, "REDUCE_MAX"),
}


@pytest.mark.parametrize("case", POOLS, ids=list(POOLS))
def test_pool(case):
    op, inputs, attrs, opcode = POOLS[case]
    H.check(H.one_node(op, inputs, **attrs), expect=[opcode], steps=2)


REDUCE = {
    "mean_hw_keep": ("ReduceMean", dict(axes=[2, 3], keepdims=1), "MEAN", 13),
    "mean_c_drop": ("ReduceMean", dict(axes=[1], keepdims=0), "MEAN", 13),
    "mean_last": ("ReduceMean", dict(axes=[-1], keepdims=1), "MEAN", 13),
    "max_hw": ("ReduceMax", dict(axes=[2, 3], keepdims=0), "REDUCE_MAX", 13),
    "max_all": ("ReduceMax", dict(keepdims=1), "REDUCE_MAX", 13),
}


@pytest.mark.parametrize("case", REDUCE, ids=list(REDUCE))
def test_reduce(case):
    op, attrs, opcode, opset = REDUCE[case]
    H.check(H.one_node(op, X, opset=opset, **attrs), expect=[opcode], steps=2)


NORM_REDUCE = {   # op, attrs, opcodes of its lowering, opset (18: axes is an input)
    "sum_square_c": ("ReduceSumSquare", dict(axes=[1], keepdims=0), ["MUL", "SUM"], 17),
    "l2_hw": ("ReduceL2", dict(axes=[2, 3], keepdims=1), ["MUL", "SUM", "SQRT"], 17),
    "l1_last": ("ReduceL1", dict(axes=[-1], keepdims=1), ["ABS", "SUM"], 17),
    "l2_c_opset18": ("ReduceL2", dict(axes=[1], keepdims=0), ["MUL", "SUM", "SQRT"], 18),
    "sum_square_all_opset18": ("ReduceSumSquare", dict(keepdims=1), ["MUL", "SUM"], 18),
}


@pytest.mark.parametrize("case", NORM_REDUCE, ids=list(NORM_REDUCE))
def test_norm_reductions(case):
    # no TFLite builtin: elementwise op, SUM, [SQRT] (float only in LiteRT: an island)
    op, attrs, opcodes, opset = NORM_REDUCE[case]
    inits = {}
    if opset >= 18 and "axes" in attrs:
        inits["axes"] = np.array(attrs.pop("axes"), np.int64)
    m = H.one_node(op, X, inits, opset=opset, **attrs)
    res, _ = H.check(m, expect=opcodes, steps=3, islands=1 if "SQRT" in opcodes else 0)
    assert res.ops == opcodes or res.ops[1:-1] == opcodes, res.ops     # layout transposes at most


def test_reduce_mean_axes_as_input_opset18():
    m = H.one_node("ReduceMean", X, {"axes": np.array([2, 3], np.int64)}, opset=18, keepdims=1)
    H.check(m, expect=["MEAN"], steps=2)


AVG_EXCLUDE_PAD = {
    "asym_pads": dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1]),
    "same_lower": dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    "ceil_mode": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "ceil_and_pads": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
}


@pytest.mark.parametrize("case", AVG_EXCLUDE_PAD, ids=list(AVG_EXCLUDE_PAD))
def test_average_pool_excluding_explicit_pads(case):
    """Border windows become their own VALID pools over input slices: no PAD, no rescale MUL."""
    H.check(H.one_node("AveragePool", {"x": (1, 4, 10, 10)}, **AVG_EXCLUDE_PAD[case]),
            expect=["AVERAGE_POOL_2D"], forbid=["MUL", "PAD"], steps=ONE_POOL_STEPS)


AVG_PADS = {"sym": [1, 1, 1, 1], "asym": [0, 1, 1, 0], "asym_wide": [1, 0, 2, 1]}


@pytest.mark.parametrize("include", [0, 1], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize("pads", AVG_PADS, ids=list(AVG_PADS))
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_average_pool_explicit_pads_border_exact_int8(include, pads, k, stride):
    """int8 AveragePool with explicit pads matches onnxruntime at the borders to one pool's
    rounding for both count_include_pad values (pads are clipped below the kernel, as ONNX asks)."""
    p = [min(v, k - 1) for v in AVG_PADS[pads]]
    m = H.one_node("AveragePool", {"x": (1, 4, 10, 11)}, kernel_shape=[k, k], strides=[stride] * 2,
                   pads=p, count_include_pad=include)
    H.check(m, forbid=["MUL", "PADV2"] + ([] if include else ["PAD"]), steps=ONE_POOL_STEPS)


def test_window_groups_split_borders_from_the_interior():
    from converters.lower.pool import window_groups
    # 10 inputs, k3 s1 pad (1, 1): border, 8 interior windows, border
    assert window_groups(10, 10, 3, 1, 1) == [(0, 2, 1), (0, 3, 8), (8, 2, 1)]
    # k3 s2 pad (1, 0) over 10: outputs start at -1, 1, 3, 5, 7 -> one clipped, four full
    assert window_groups(5, 10, 3, 2, 1) == [(0, 2, 1), (1, 3, 4)]
    # no padding: one run covering everything
    assert window_groups(4, 8, 2, 2, 0) == [(0, 2, 4)]


MAX_PADS = {"sym_s2_even": ([1, 1, 1, 1], 2, 10), "asym_s1": ([0, 1, 2, 1], 1, 9),
            "ceil_s2": ([1, 1, 1, 1], 2, 10)}


@pytest.mark.parametrize("case", MAX_PADS, ids=list(MAX_PADS))
def test_signed_max_pool_with_explicit_pads_needs_no_padv2(case):
    """A MaxPool over signed values whose pads are not SAME's pools each border block from a
    slice of the input (windows clipped, like -inf padding) instead of PADV2 with the lowest value."""
    pads, stride, size = MAX_PADS[case]
    m = H.one_node("MaxPool", {"x": (1, 4, size, size)}, kernel_shape=[3, 3], strides=[stride] * 2,
                   pads=pads, ceil_mode=int(case.startswith("ceil")))
    _, q = H.check(m, expect=["SLICE", "MAX_POOL_2D"], forbid=["PADV2", "PAD"], steps=ONE_POOL_STEPS)
    assert "PADV2" not in q.ops and "PAD" not in q.ops


def _stem(relu: bool):
    """Conv 7x7/2 -> [Relu] -> MaxPool 3x3/2 pads 1 (not SAME's on an even size) -> padded Conv and
    an Add reading the pool: the ResNet stem shape whose int8 PADV2 XNNPACK refused to build."""
    import numpy as np
    r = np.random.default_rng(0)
    inits = {"w1": r.normal(0, .2, (8, 3, 7, 7)).astype(np.float32),
             "w2": r.normal(0, .2, (8, 8, 3, 3)).astype(np.float32)}
    node = H.helper.make_node
    nodes = [node("Conv", ["x", "w1"], ["c"], strides=[2, 2], pads=[3, 3, 3, 3])]
    if relu:
        nodes.append(node("Relu", ["c"], ["r"]))
    nodes += [node("MaxPool", ["r" if relu else "c"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1]),
              node("Conv", ["m", "w2"], ["c2"], pads=[1, 1, 1, 1]),
              node("Add", ["m", "c2"], ["y"])]
    return H.model(nodes, {"x": (1, 3, 64, 64)}, ["y"], inits)


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "relu"])
def test_resnet_stem_max_pool_loads_in_xnnpack_int8(relu):
    """H.check loads both models with the XNNPACK delegate (make_interpreter's default) and
    compares with onnxruntime; the signed stem used to fail there with PADV2."""
    _, q = H.check(_stem(relu), steps=3)
    assert "PADV2" not in q.ops
    # after a ReLU zero padding stays the one-op lowering (so such models convert as before)
    assert ("SLICE" in q.ops) != relu and ("PAD" in q.ops[q.ops.index("CONV_2D") + 1:]) == relu


@pytest.mark.parametrize("seed", range(40))
def test_random_pool_geometry(seed):
    """Random kernel, stride, pads, ceil_mode and count_include_pad, float and int8."""
    import numpy as np
    r = np.random.default_rng(200 + seed)
    op = str(r.choice(["MaxPool", "AveragePool"]))
    k = [int(v) for v in r.integers(1, 5, 2)]
    pads = [int(min(v, k[i % 2] - 1)) for i, v in enumerate(r.integers(0, 3, 4))]   # ONNX: pad < kernel
    attrs = dict(kernel_shape=k, strides=[int(v) for v in r.integers(1, 4, 2)], pads=pads,
                 ceil_mode=int(r.random() < 0.3))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(r.random() < 0.5)
    size = [int(v) for v in r.integers(6, 12, 2)]
    m = H.one_node(op, {"x": (1, 3, *size)}, **attrs)
    # (with ceil_mode, a last window that starts in the end padding is dropped as onnxruntime does,
    # even where ONNX shape inference for opset <= 21 declares it; check() compares with ORT)
    H.check(m, steps=ONE_POOL_STEPS)


def test_ceil_mode_last_window_in_padding_is_dropped_like_onnxruntime():
    """ONNX shape inference (opset <= 21) declares 2x2 here; onnxruntime and the ONNX reference
    drop the window that starts in the end padding and give 1x1. The converter follows them."""
    m = H.one_node("AveragePool", {"x": (1, 3, 2, 2)}, kernel_shape=[3, 3], strides=[3, 3],
                   pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 2, 2]
    res, _ = H.check(m, steps=3)
    assert res.outputs[0].shape == [1, 3, 1, 1]
