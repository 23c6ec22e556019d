"""Conv / ConvTranspose: float and int8 against onnxruntime, plus the emitted opcodes."""
import numpy as np
import pytest
from onnx import helper

from tests.converters.ops import harness as H

RNG = np.random.default_rng(1)


def w(*shape, s=0.3):
    return RNG.normal(0, s, shape).astype(np.float32)


CONV_CASES = {
    # id: (x shape, weight shape, attrs, expected opcode)
    "3x3_pad1": ((1, 3, 12, 12), (8, 3, 3, 3), dict(pads=[1, 1, 1, 1]), "CONV_2D"),
    "stride2_same_upper": ((1, 4, 11, 11), (6, 4, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER"), "CONV_2D"),
    "same_lower": ((1, 4, 10, 10), (6, 4, 2, 2), dict(auto_pad="SAME_LOWER"), "PAD"),
    "valid": ((1, 4, 9, 9), (6, 4, 3, 3), dict(auto_pad="VALID"), "CONV_2D"),
    "asym_pads": ((1, 3, 9, 9), (5, 3, 3, 3), dict(pads=[0, 1, 2, 1]), "PAD"),
    "dilated": ((1, 3, 14, 14), (4, 3, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), "CONV_2D"),
    "rect_kernel": ((1, 3, 10, 12), (4, 3, 1, 5), dict(pads=[0, 2, 0, 2], strides=[1, 2]), "CONV_2D"),
    "pointwise": ((1, 16, 7, 7), (24, 16, 1, 1), {}, "CONV_2D"),
    "depthwise": ((1, 8, 10, 10), (8, 1, 3, 3), dict(group=8, pads=[1, 1, 1, 1]), "DEPTHWISE_CONV_2D"),
    "depthwise_mult2_s2": ((1, 4, 10, 10), (8, 1, 3, 3), dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
                           "DEPTHWISE_CONV_2D"),
    "groups2": ((1, 8, 8, 8), (6, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "SPLIT"),
    "conv1d": ((1, 4, 20), (6, 4, 3), dict(pads=[1, 1], strides=[2]), "CONV_2D"),
    "conv1d_depthwise": ((1, 4, 16), (4, 1, 5), dict(group=4, pads=[2, 2]), "DEPTHWISE_CONV_2D"),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_conv(case):
    x_shape, w_shape, attrs, opcode = CONV_CASES[case]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    m = H.model([node], {"x": x_shape}, ["y"], {"w": w(*w_shape), "b": w(w_shape[0], s=0.1)})
    H.check(m, expect=[opcode], forbid=[] if len(x_shape) == 3 else [], steps=3)


def test_conv_without_bias_and_fused_relu6():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    m = H.model(nodes, {"x": (1, 3, 8, 8)}, ["y"],
                {"w": w(4, 3, 3, 3), "lo": np.float32(0), "hi": np.float32(6)})
    res, q = H.check(m, expect=["CONV_2D"], forbid=["RELU6", "MINIMUM"])
    assert res.ops.count("CONV_2D") == 1
    import ai_edge_litert.schema_py_generated as schema
    for result in (res, q):
        model = schema.ModelT.InitFromPackedBuf(result.flatbuffer, 0)
        codes = [c.builtinCode for c in model.operatorCodes]
        conv = next(o for o in model.subgraphs[0].operators
                    if codes[o.opcodeIndex] == schema.BuiltinOperator.CONV_2D)
        assert conv.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU6


T = "TRANSPOSE_CONV"
CONV_T_CASES = {
    # id: (x shape, weight shape [I, O/g, k...], attrs, expected opcode)
    "k3_s2": ((1, 4, 5, 5), (4, 6, 3, 3), dict(strides=[2, 2]), T),
    "k4_s2_pad1": ((1, 4, 5, 5), (4, 3, 4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1]), T),
    "outpad": ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), T),
    "k2_s2": ((1, 8, 6, 6), (8, 4, 2, 2), dict(strides=[2, 2]), T),
    "1d": ((1, 4, 7), (4, 3, 3), dict(strides=[2]), T),
    "same_upper": ((1, 3, 5, 5), (3, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER"), T),
    "output_shape": ((1, 3, 4, 4), (3, 2, 3, 3), dict(strides=[3, 3], output_shape=[12, 13]), T),
    # stride 1: the Conv it equals, which also takes groups and dilations (GTCRN's streaming decoder)
    "s1_pointwise": ((1, 8, 1, 9), (8, 5, 1, 1), {}, "CONV_2D"),
    "s1_pad1": ((1, 3, 6, 7), (3, 4, 3, 3), dict(pads=[1, 1, 1, 1]), "CONV_2D"),
    "s1_depthwise_dilated": ((1, 6, 11, 9), (6, 1, 3, 3), dict(group=6, dilations=[5, 1], pads=[10, 1, 10, 1]),
                             "DEPTHWISE_CONV_2D"),
    "s1_groups2_dilated": ((1, 8, 7, 7), (8, 3, 3, 3), dict(group=2, dilations=[2, 2], pads=[1, 2, 3, 0]), "SPLIT"),
    "s1_1d_dilated": ((1, 4, 12), (4, 3, 3), dict(dilations=[3], pads=[1, 2]), "CONV_2D"),
    # strided and grouped: one TRANSPOSE_CONV per group
    "s2_groups2": ((1, 8, 1, 9), (8, 4, 1, 5), dict(group=2, strides=[1, 2], pads=[0, 2, 0, 2]), "SPLIT"),
    "s2_groups3_outpad_1d": ((1, 6, 5), (6, 2, 3), dict(group=3, strides=[2], pads=[1, 0], output_padding=[1]),
                             "SPLIT"),
}


@pytest.mark.parametrize("case", CONV_T_CASES, ids=list(CONV_T_CASES))
def test_conv_transpose(case):
    x_shape, w_shape, attrs, opcode = CONV_T_CASES[case]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    bias = w(w_shape[1] * attrs.get("group", 1), s=0.1)
    m = H.model([node], {"x": x_shape}, ["y"], {"w": w(*w_shape), "b": bias})
    H.check(m, expect=[opcode], steps=3)


@pytest.mark.parametrize("seed", range(40))
def test_random_conv_geometry(seed):
    """Random kernel, stride, dilation, explicit or auto padding and grouping, float and int8."""
    r = np.random.default_rng(100 + seed)
    c = int(r.choice([2, 4]))
    group = int(r.choice([1, c, 2]))
    cout = group * int(r.integers(1, 3))
    k = [int(v) for v in r.integers(1, 5, 2)]
    attrs = dict(strides=[int(v) for v in r.integers(1, 4, 2)], dilations=[int(v) for v in r.integers(1, 3, 2)],
                 group=group)
    if r.random() < 0.3:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        if attrs["auto_pad"] != "VALID":
            attrs["dilations"] = [1, 1]    # onnxruntime (the reference) refuses dilated SAME_*
    else:
        attrs["pads"] = [int(v) for v in r.integers(0, 3, 4)]
    size = [int(v) for v in r.integers(7, 13, 2)]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=k, **attrs)
    m = H.model([node], {"x": (1, c, *size)}, ["y"], {"w": w(cout, c // group, *k), "b": w(cout, s=0.1)})
    H.check(m, steps=3)


@pytest.mark.parametrize("seed", range(30))
def test_random_conv_transpose_geometry(seed):
    """Random kernel, stride, pads, output_padding / output_shape / auto_pad, float and int8."""
    r = np.random.default_rng(300 + seed)
    k = [int(v) for v in r.integers(1, 5, 2)]
    s = [int(v) for v in r.integers(1, 4, 2)]
    attrs = dict(kernel_shape=k, strides=s)
    mode = r.integers(0, 3)
    if mode == 0:
        attrs["pads"] = [int(min(v, k[i % 2] - 1)) for i, v in enumerate(r.integers(0, 3, 4))]
        attrs["output_padding"] = [int(r.integers(0, s[i])) for i in range(2)]
    elif mode == 1:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER"]))
    size = [int(v) for v in r.integers(3, 7, 2)]
    if mode == 2:
        full = [(size[i] - 1) * s[i] + k[i] for i in range(2)]
        attrs["output_shape"] = [int(full[i] + r.integers(-min(k[i] - 1, 1), s[i])) for i in range(2)]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    m = H.model([node], {"x": (1, 3, *size)}, ["y"], {"w": w(3, 2, *k), "b": w(2, s=0.1)})
    H.check(m, steps=3)
