"""Data movement: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Pad, Gather,
Expand."""
import numpy as np
import pytest
from onnx import helper

from tests.converters.ops import harness as H

I64 = np.int64
X = {"x": (2, 3, 4, 5)}

CASES = {
    # id: (op, inputs, inits, attrs, opcode, opset)
    "reshape": ("Reshape", X, {"s": np.array([2, -1, 5], I64)}, {}, "RESHAPE", 17),
    "reshape_zero": ("Reshape", X, {"s": np.array([0, 0, -1], I64)}, {}, "RESHAPE", 17),
    "flatten": ("Flatten", X, {}, dict(axis=2), "RESHAPE", 17),
    "squeeze": ("Squeeze", {"x": (2, 1, 4, 1)}, {"a": np.array([1, -1], I64)}, {}, "RESHAPE", 17),
    "squeeze_attr_opset11": ("Squeeze", {"x": (2, 1, 4, 1)}, {}, dict(axes=[1]), "RESHAPE", 11),
    "unsqueeze": ("Unsqueeze", X, {"a": np.array([0, 5], I64)}, {}, "RESHAPE", 17),
    "transpose": ("Transpose", X, {}, dict(perm=[0, 2, 3, 1]), "TRANSPOSE", 17),
    "transpose_default": ("Transpose", {"x": (3, 4, 5)}, {}, {}, "TRANSPOSE", 17),
    "concat_axis1": ("Concat", {"a": (2, 3, 4), "b": (2, 5, 4)}, {}, dict(axis=1), "CONCATENATION", 17),
    "concat_const": ("Concat", {"a": (2, 3)}, {"b": np.ones((2, 2), np.float32)}, dict(axis=-1),
                     "CONCATENATION", 17),
    "slice": ("Slice", X, {"s": np.array([1, 0], I64), "e": np.array([3, 4], I64),
                           "ax": np.array([1, 3], I64)}, {}, "STRIDED_SLICE", 17),
    "slice_steps": ("Slice", X, {"s": np.array([0, 4], I64), "e": np.array([4, 0], I64),
                                 "ax": np.array([2, 3], I64), "st": np.array([2, -1], I64)}, {},
                    "STRIDED_SLICE", 17),
    "slice_reverse_all": ("Slice", {"x": (6,)}, {"s": np.array([-1], I64), "e": np.array([-100], I64),
                                                 "ax": np.array([0], I64), "st": np.array([-1], I64)}, {},
                          "STRIDED_SLICE", 17),
    "pad_const": ("Pad", X, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}, {}, "PAD", 17),
    "pad_value": ("Pad", X, {"p": np.array([0, 1, 0, 0, 0, 1, 0, 0], I64), "v": np.float32(0.5)}, {},
                  "PADV2", 17),
    "pad_reflect": ("Pad", X, {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], I64)}, dict(mode="reflect"),
                    "MIRROR_PAD", 17),
    # edge: one MIRROR_PAD SYMMETRIC per repeated element (Caffe ports pad before ceil-mode pools)
    "pad_edge": ("Pad", X, {"p": np.array([0, 0, 1, 0, 0, 0, 1, 1], I64)}, dict(mode="edge"), "MIRROR_PAD", 17),
    "pad_edge_wide": ("Pad", X, {"p": np.array([0, 1, 3, 0, 0, 0, 2, 4], I64)}, dict(mode="edge"),
                      "MIRROR_PAD", 17),
    "gather": ("Gather", X, {"i": np.array([3, 0, -1], I64)}, dict(axis=2), "GATHER", 17),
    "expand_broadcast": ("Expand", {"x": (2, 1, 5)}, {"s": np.array([2, 4, 5], I64)}, {}, "BROADCAST_TO", 17),
    "expand_rank": ("Expand", {"x": (3, 5)}, {"s": np.array([2, 1, 5], I64)}, {}, "BROADCAST_TO", 17),
    "expand_to_own_shape": ("Expand", {"x": (2, 3, 1)}, {"s": np.array([1, 1, 1], I64)}, {}, "RESHAPE", 17),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_shape_op(case):
    op, inputs, inits, attrs, opcode, opset = CASES[case]
    m = H.one_node(op, inputs, inits, opset=opset, **attrs)
    H.check(m, expect=[opcode], steps=1.01)   # pure data movement: only input rounding (1/2 step)


SPLITS = {"equal": (None, 3, 18), "sizes_input": (np.array([1, 2, 3], I64), 3, 13),
          "sizes_attr_opset11": ([2, 4], 2, 11)}


@pytest.mark.parametrize("case", SPLITS, ids=list(SPLITS))
def test_split(case):
    sizes, n, opset = SPLITS[case]
    attrs = dict(axis=1)
    inits = {}
    if opset == 18:
        attrs["num_outputs"] = n
    elif opset == 11:
        attrs["split"] = sizes
    else:
        inits = {"s": sizes}
    m = H.one_node("Split", {"x": (2, 6, 4)}, inits, n_out=n, opset=opset, **attrs)
    H.check(m, expect=["SPLIT_V"], steps=1.01)


def test_reshape_after_global_pool_needs_no_transpose():
    """[N,C,1,1] stored as [N,1,1,C] has the same bytes: Flatten must not transpose."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"], {"w": rng.normal(0, 1, (5, 3, 1, 1)).astype(np.float32)})
    res, _ = H.check(m, steps=2)
    assert res.ops.count("TRANSPOSE") == 1 and res.ops[0] == "TRANSPOSE", res.ops


def test_transpose_that_undoes_the_layout_vanishes():
    """Conv then Transpose(0,2,3,1) (an exporter's NHWC output) is a no-op on NHWC storage."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"], {"w": rng.normal(0, 1, (5, 3, 1, 1)).astype(np.float32)})
    res, _ = H.check(m, steps=2)
    assert res.ops.count("TRANSPOSE") == 1, res.ops   # only the input edge


def test_concat_of_convs_stays_nhwc_and_shares_int8_params():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Relu", ["c"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 6, 6)}, ["y"], {"w1": rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float32),
                                                    "w2": rng.normal(0, 3, (2, 3, 1, 1)).astype(np.float32)})
    res, _ = H.check(m, steps=2)
    assert res.ops.count("TRANSPOSE") == 2, res.ops


def test_concat_of_sigmoid_and_wide_tensor_is_not_clipped_in_int8():
    """LOGISTIC's output params are fixed (1/256); the concat's other input spans [-4, 4]. The
    concat writes the float output from ranges 9x apart, so it runs float (each input keeps its
    own scale: quantize._float_output_joins); the int8 requantize of a sigmoid joining a tie is
    tests/converters/tflite/test_ties.py::test_fixed_source_is_requantized_not_widened."""
    nodes = [helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Concat", ["s", "b"], ["y"], axis=1)]
    m = H.model(nodes, {"a": (1, 4, 3), "b": (1, 2, 3)}, ["y"])
    samples = [{"a": s["a"], "b": s["b"] * 2} for s in H.samples_for(m)]
    _, q = H.check(m, samples=samples, steps=2, islands=1)
    assert q.ops == ["QUANTIZE", "LOGISTIC", "DEQUANTIZE", "CONCATENATION"], q.ops


def test_float_to_float_cast_is_a_copy_and_int_cast_uses_cast():
    m = H.one_node("Cast", {"x": (2, 3)}, to=1)
    res, _ = H.check(m, expect=["RESHAPE"], steps=1.01)
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=6), helper.make_node("Cast", ["i"], ["y"], to=1)]
    m = H.model(nodes, {"x": (2, 3)}, ["y"])
    H.check(m, expect=["CAST"], int8=False)


@pytest.mark.parametrize("op,attrs,shape", [
    ("SpaceToDepth", dict(blocksize=2), (1, 3, 6, 8)),
    ("DepthToSpace", dict(blocksize=2, mode="DCR"), (1, 8, 3, 4)),
    ("DepthToSpace", dict(blocksize=2, mode="CRD"), (1, 8, 3, 4)),
])
def test_depth_space(op, attrs, shape):
    opcode = "SPACE_TO_DEPTH" if op == "SpaceToDepth" else "DEPTH_TO_SPACE"
    H.check(H.one_node(op, {"x": shape}, **attrs), expect=[opcode], steps=1.01)


@pytest.mark.parametrize("head", ["flatten_gemm", "reshape_matmul", "flatten_gemm_notransb", "two_users"])
def test_flatten_of_spatial_map_permutes_weights_instead_of_transposing(head):
    """[N,C,H,W] (H,W > 1) -> Flatten -> Gemm: the channels-last bytes are flattened as they are
    and the weight rows permuted, so no TRANSPOSE runs inside."""
    rng = np.random.default_rng(3)
    k = 4 * 3 * 3
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    inits = {"w": rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32),
             "fc": rng.normal(0, 0.3, (5, k)).astype(np.float32), "fc_t": rng.normal(0, 0.3, (k, 5)).astype(np.float32),
             "shape": np.array([1, k], I64)}
    if head == "reshape_matmul":
        nodes += [helper.make_node("Reshape", ["c", "shape"], ["f"]), helper.make_node("MatMul", ["f", "fc_t"], ["y"])]
    elif head == "flatten_gemm_notransb":
        nodes += [helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Gemm", ["f", "fc_t"], ["y"])]
    else:
        nodes += [helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    outputs = ["y"]
    if head == "two_users":
        nodes.append(helper.make_node("MatMul", ["f", "fc_t"], ["y2"]))
        outputs.append("y2")
    m = H.model(nodes, {"x": (1, 2, 3, 3)}, outputs, inits)
    res, _ = H.check(m, steps=3)
    assert res.ops.count("TRANSPOSE") == 1 and res.ops[0] == "TRANSPOSE", res.ops


def test_flatten_that_is_also_an_output_keeps_onnx_order():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    m = H.model(nodes, {"x": (1, 2, 3, 3)}, ["y", "f"], {"w": rng.normal(0, 0.5, (4, 2, 1, 1)).astype(np.float32),
                                                        "fc": rng.normal(0, 0.3, (5, 36)).astype(np.float32)})
    res, _ = H.check(m, steps=3)
    assert res.ops.count("TRANSPOSE") == 2, res.ops          # input edge + back to NCHW for 'f'
