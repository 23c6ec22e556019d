"""Randomly composed channels-first graphs: the layout pass must keep every value right.

Each seed builds a chain over a 4-D NCHW tensor mixing spatial ops (NHWC inside), elementwise ops
with broadcast constants, axis ops (Concat, Softmax, ReduceMean, Slice, Pad, Transpose) and
layout-sensitive ops (Reshape); the float TFLite result must equal onnxruntime's, and int8 must
stay close. This is where a wrong axis remap or a missing transpose shows up.
"""
import numpy as np
import pytest
from onnx import helper

from tests.converters.ops import harness as H

I64 = np.int64


class Chain:
    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.n = rng, [], {}, 0
        self.shape = [1, 4, 8, 8]

    def name(self, hint):
        self.n += 1
        return f"{hint}{self.n}"

    def const(self, value):
        key = self.name("k")
        self.inits[key] = np.asarray(value)
        return key

    def add(self, op, inputs, shape, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        self.shape = list(shape)
        return out

    def step(self, x):
        n, c, h, w = self.shape
        choice = self.rng.integers(0, 18)
        r = self.rng
        if choice == 0:
            cout = int(r.integers(2, 7))
            wk = self.const(r.normal(0, 0.5, (cout, c, 3, 3)).astype(np.float32))
            return self.add("Conv", [x, wk], [n, cout, h, w], pads=[1, 1, 1, 1])
        if choice == 1:
            return self.add("Relu", [x], self.shape)
        if choice == 2:
            return self.add("Add", [x, self.const(r.normal(0, 1, (c, 1, 1)).astype(np.float32))], self.shape)
        if choice == 3 and h >= 4 and w >= 4:
            return self.add("MaxPool", [x], [n, c, h // 2, w // 2], kernel_shape=[2, 2], strides=[2, 2])
        if choice == 4:
            return self.add("Concat", [x, x], [n, 2 * c, h, w], axis=1)
        if choice == 5:
            return self.add("Softmax", [x], self.shape, axis=int(r.choice([1, 3])))
        if choice == 6:
            return self.add("ReduceMean", [x], [n, c, 1, w], axes=[2], keepdims=1)
        if choice == 7 and c >= 2:
            s = self.const(np.array([1], I64))
            e = self.const(np.array([c], I64))
            a = self.const(np.array([1], I64))
            return self.add("Slice", [x, s, e, a], [n, c - 1, h, w])
        if choice == 8:
            p = self.const(np.array([0, 0, 1, 0, 0, 1, 0, 2], I64))
            return self.add("Pad", [x, p], [n, c + 1, h + 1, w + 2])
        if choice == 9:
            t = self.add("Transpose", [x], [n, h, w, c], perm=[0, 2, 3, 1])
            return self.add("Transpose", [t], [n, c, h, w], perm=[0, 3, 1, 2])
        if choice == 10:
            y = self.add("Mul", [x, x], self.shape)
            return self.add("Sigmoid", [y], self.shape)
        if choice == 12:
            wk = self.const(r.normal(0, 0.5, (c, 1, 3, 3)).astype(np.float32))
            return self.add("Conv", [x, wk], [n, c, h, w], pads=[1, 1, 1, 1], group=c)
        if choice == 13 and h <= 8:
            wk = self.const(r.normal(0, 0.5, (c, 3, 2, 2)).astype(np.float32))
            return self.add("ConvTranspose", [x, wk], [n, 3, 2 * h, 2 * w], strides=[2, 2])
        if choice == 14 and h <= 8:
            roi, sc = self.const(np.array([], np.float32)), self.const(np.array([1, 1, 2, 2], np.float32))
            return self.add("Resize", [x, roi, sc], [n, c, 2 * h, 2 * w], mode="linear")
        if choice == 15:
            return self.add("HardSwish", [x], self.shape)
        if choice == 16 and c >= 2:
            sizes = self.const(np.array([1, c - 1], I64))
            a, b = self.name("split"), self.name("split")
            self.nodes.append(helper.make_node("Split", [x, sizes], [a, b], axis=1))
            return self.add("Concat", [b, a], [n, c, h, w], axis=1)
        if choice == 17:
            params = [self.const(r.uniform(0.5, 1.5, c).astype(np.float32)) for _ in range(4)]
            return self.add("BatchNormalization", [x, *params], self.shape)
        shape = self.const(np.array([n, c, h * w], I64))
        y = self.add("Reshape", [x, shape], [n, c, h * w])
        back = self.const(np.array([n, c, h, w], I64))
        return self.add("Reshape", [y, back], [n, c, h, w])


def random_chain(seed: int):
    """(model, chain): a 1x1 Conv then six random layout-sensitive steps, seeded."""
    chain = Chain(np.random.default_rng(seed))
    wk = chain.const(np.random.default_rng(seed).normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32))
    x = chain.add("Conv", ["x", wk], [1, 4, 8, 8])
    for _ in range(6):
        x = chain.step(x)
    chain.nodes.append(helper.make_node("Identity", [x], ["y"]))
    return H.model(chain.nodes, {"x": (1, 3, 8, 8)}, ["y"], chain.inits), chain


@pytest.mark.parametrize("seed", range(24))
def test_random_chain(seed):
    m, chain = random_chain(seed)
    ops = [n.op_type for n in chain.nodes]
    res = H.convert(m, "none")
    feeds = H.samples_for(m, 1, seed=seed)[0]
    ref = H.ort_run(m, feeds)[0]
    np.testing.assert_allclose(H.tflite_run(res, feeds)[0], ref, atol=1e-4, rtol=1e-4,
                               err_msg=f"{ops} -> {res.ops}")


@pytest.mark.parametrize("seed", range(12))
def test_random_chain_int8(seed):
    m, chain = random_chain(seed)
    samples = H.samples_for(m, 8, seed=seed)
    q = H.convert(m, "int8", samples=samples)
    ref = H.ort_run(m, samples[0])[0]
    got = H.tflite_run(q, samples[0])[0]
    sqnr = H.sqnr_db(ref, got)
    # A chain of up to 7 int8 ops loses ~0.5 step per op; 20 dB is far below what a correct chain
    # gets and far above what a wrong scale, zero point or axis gives (around 0 dB).
    assert sqnr > 20, f"{sqnr:.1f} dB: {[n.op_type for n in chain.nodes]} -> {q.ops}"


def _random_axis_op(r, name):
    """One axis-sensitive op with random parameters on a [1, 4, 5, 6] tensor (stored NHWC)."""
    shape = [1, 4, 5, 6]
    op = str(r.choice(["Slice", "ReduceMean", "ReduceMax", "Transpose", "Concat", "Split", "Pad",
                       "Softmax", "Flatten", "Unsqueeze", "Gather"]))
    inits, attrs, n_out = {}, {}, 1
    if op == "Slice":
        axes = sorted(r.choice(4, size=int(r.integers(1, 4)), replace=False))
        steps = [int(r.choice([1, 2, -1])) for _ in axes]
        starts, ends = [], []
        for a, st in zip(axes, steps):   # non-empty slices only (zero-size tensors are refused)
            while True:
                b, e = int(r.integers(-shape[a], shape[a])), int(r.integers(-shape[a] - 1, shape[a] + 1))
                if len(range(*slice(b, e, st).indices(shape[a]))):
                    break
            starts.append(b)
            ends.append(e)
        inits = {"s": np.array(starts, I64), "e": np.array(ends, I64), "a": np.array(axes, I64),
                 "st": np.array(steps, I64)}
    elif op in ("ReduceMean", "ReduceMax"):
        axes = sorted(r.choice(4, size=int(r.integers(1, 4)), replace=False))
        attrs = dict(axes=[int(a) for a in axes], keepdims=int(r.integers(0, 2)))
    elif op == "Transpose":
        attrs = dict(perm=[int(v) for v in r.permutation(4)])
    elif op == "Concat":
        axis = int(r.integers(0, 4))
        other = list(shape)
        other[axis] = 2
        inits = {"k": r.normal(0, 1, other).astype(np.float32)}
        attrs = dict(axis=axis)
    elif op == "Split":
        axis = int(r.integers(1, 4))
        attrs, n_out = dict(axis=axis), 2
        inits = {"sp": np.array([1, shape[axis] - 1], I64)}
    elif op == "Pad":
        inits = {"p": r.integers(0, 3, 8).astype(I64)}     # < every dim: valid for reflect too
        attrs = dict(mode=str(r.choice(["constant", "reflect"])))
        if attrs["mode"] == "reflect":
            inits["p"][[0, 4]] = 0                        # the batch dim is 1: nothing to reflect
    elif op == "Softmax":
        attrs = dict(axis=int(r.integers(-4, 4)))
    elif op == "Flatten":
        attrs = dict(axis=int(r.integers(0, 5)))
    elif op == "Unsqueeze":
        inits = {"a": np.array([int(r.integers(0, 5))], I64)}
    else:
        attrs = dict(axis=int(r.integers(0, 4)))
        inits = {"i": np.array([0, -1], I64)}
    outs = [f"{name}{i}" for i in range(n_out)]
    return helper.make_node(op, ["c", *inits], outs, **attrs), inits, outs


@pytest.mark.parametrize("seed", range(40))
def test_random_axis_op_on_nhwc_data(seed):
    r = np.random.default_rng(1000 + seed)
    node, inits, outs = _random_axis_op(r, "y")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    inits["w"] = r.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    m = H.model([conv, node], {"x": (1, 3, 5, 6)}, outs, inits)
    # Softmax: its output step is 1/256 while the conv output it reads spans ~[-8, 8] (step ~1/16);
    # input rounding moves a probability by up to in_step/4 (|dp/dx| summed <= 1/2), ~4 steps.
    H.check(m, steps=8 if node.op_type == "Softmax" else 3)


@pytest.mark.parametrize("seed", range(30))
def test_random_broadcast_on_nhwc_data(seed):
    """Binary ops between NHWC-stored data and constants/activations of every broadcastable shape."""
    r = np.random.default_rng(2000 + seed)
    full = [1, 4, 5, 6]
    rank = int(r.integers(0, 5))
    other = [int(d) if r.random() < 0.5 else 1 for d in full[4 - rank:]]
    op = str(r.choice(["Add", "Sub", "Mul", "Max", "Min"]))
    as_input = r.random() < 0.4 and rank > 0
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    inputs = {"x": (1, 3, 5, 6)}
    inits = {"w": r.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)}
    if as_input:
        inputs["k"] = tuple(other)
    else:
        inits["k"] = r.normal(0, 1, other).astype(np.float32)
    names = ["c", "k"] if r.random() < 0.5 else ["k", "c"]
    m = H.model([conv, helper.make_node(op, names, ["y"])], inputs, ["y"], inits)
    H.check(m, steps=3)
