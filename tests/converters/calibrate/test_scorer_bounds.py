"""``auto``'s scorer sees the int8 TFLite model (``select.Int8View``, ``tflite.int8_view``): it
cuts each candidate range as the writer will (``select.cut`` on the bounds of
``tflite.saturate.bounds``), so the range it scores is the one LiteRT's int8 model holds, and it
rounds only the tensors the lowered graph holds. Real LiteRT int8 builds of single-layer graphs:
a pre-activation with a wide tail that every reader saturates on (a Sigmoid; HardSwish written
out as ``h * relu6(h + 3) / 6``); a GELU written out (one TFLite op)."""
import numpy as np
import pytest
from onnx import helper

from converters import tflite
from converters.calibrate import collect_ranges, runner, select
from core.litert import make_interpreter
from tests.converters.ops import harness as H


def _layer(kind: str):
    """Gemm 16 -> 32 (output h), then ``kind``; pre-activations mostly within +-2, one row in
    four 8x larger: a min/max range of h spans far past what the readers tell apart."""
    rng = np.random.default_rng(5)
    inits = {"w": rng.normal(0, 0.25, (32, 16)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1)]
    if kind == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["h"], ["y"]))
    else:               # paddle2onnx's HardSwish: the product is 0 wherever h <= -3
        inits.update(three=np.array(3.0, np.float32), zero=np.array(0.0, np.float32),
                     six=np.array(6.0, np.float32))
        nodes += [helper.make_node("Add", ["h", "three"], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["g"]),
                  helper.make_node("Mul", ["h", "g"], ["p"]),
                  helper.make_node("Div", ["p", "six"], ["y"])]
    m = H.model(nodes, {"x": (4, 16)}, ["y"], inits)
    data = [{"x": (rng.normal(0, 1, (4, 16)) * [[8], [1], [1], [1]]).astype(np.float32)}
            for _ in range(8)]
    return m, data


@pytest.mark.parametrize("kind, bound", [("sigmoid", (-7.0, 7.0)), ("hardswish", (-3.0, np.inf))])
def test_the_scorer_quantizes_over_the_range_the_tflite_model_holds(kind, bound):
    m, calib = _layer(kind)
    view = tflite.int8_view(tflite.ir_graph(m, tflite.TFLiteOptions()))
    assert view.bounds["h"] == bound
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    assert ranges["h"][0] < bound[0] - 5            # the cut matters
    result = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    detail = make_interpreter(result.flatbuffer).get_tensor_details()[result.tensor_map["h"]["index"]]
    scale, zero = select.int8_params(*select.cut(ranges["h"], view.bounds["h"]))
    assert detail["quantization"][0] == pytest.approx(scale, rel=1e-6)
    assert detail["quantization"][1] == zero

    refs = [H.ort_run(m, s) for s in calib]
    names = sorted(n for n in ranges if n in runner.activations(m))
    scored = select.Scorer(m, names, calib, refs, runner.make_session, view)
    plain = select.Scorer(m, names, calib, refs, runner.make_session)
    cut = {n: select.cut(ranges[n], view.bounds.get(n)) for n in names}
    np.testing.assert_array_equal(scored(ranges), plain(cut))
    assert scored(ranges).sum() < 0.8 * plain(ranges).sum()     # the uncut range overstated the noise


@pytest.mark.parametrize("rng, bound, want", [
    ((-40.0, 5.0), (-3.0, np.inf), (-3.0, 5.0)),
    ((-40.0, 5.0), None, (-40.0, 5.0)),
    ((-1.0, 2.0), (-7.0, 7.0), (-1.0, 2.0)),
    ((-9.0, -8.0), (-3.0, np.inf), (-9.0, -8.0)),       # no overlap: no cut (the writer keeps it)
])
def test_cut(rng, bound, want):
    assert select.cut(rng, bound) == want


def test_the_scorer_leaves_alone_what_one_tflite_op_computes():
    """GELU as PyTorch exports it, ``h * 0.5 * (1 + erf(h / sqrt 2))``: one GELU op in TFLite,
    whose Div, Erf, Add and Mul outputs int8 never rounds."""
    rng = np.random.default_rng(6)
    inits = {"w": rng.normal(0, 0.5, (16, 8)).astype(np.float32), "r2": np.array(2 ** 0.5, np.float32),
             "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Div", ["h", "r2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    m = H.model(nodes, {"x": (4, 16)}, ["y"], inits)
    calib = H.samples_for(m, 4)
    view = tflite.int8_view(tflite.ir_graph(m, tflite.TFLiteOptions()))
    result = tflite.build(m, collect_ranges(m, calib, method="minmax", progress=False), tflite.TFLiteOptions(),
                          samples=calib)
    assert "GELU" in result.ops
    assert {"d", "e", "a", "m"}.isdisjoint(view.tensors) and {"x", "h", "y"} <= view.tensors
    assert {"d", "e", "a", "m"}.isdisjoint(result.tensor_map)
    names = ["x", "h", "d", "e", "a", "m", "y"]
    scorer = select.Scorer(m, names, calib, [H.ort_run(m, s) for s in calib], runner.make_session, view)
    assert scorer.names == ["x", "h", "y"]
    fine = {n: (-8.0, 8.0) for n in names}
    np.testing.assert_array_equal(scorer(fine), scorer(dict(fine, e=(-1000.0, 1000.0))))
