"""``auto``'s scorer cuts each candidate range as the TFLite writer will (``select.cut`` on the
bounds of ``tflite.saturate.bounds``): the range it scores is the one LiteRT's int8 model holds.
Real LiteRT int8 builds of single-layer graphs whose pre-activation has a wide tail that every
reader saturates on (a Sigmoid; HardSwish written out as ``h * relu6(h + 3) / 6``)."""
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
    bounds = tflite.saturation_bounds(tflite.ir_graph(m, tflite.TFLiteOptions()))
    assert bounds["h"] == bound
    ranges = collect_ranges(m, calib, method="minmax", progress=False)
    assert ranges["h"][0] < bound[0] - 5            # the cut matters
    result = tflite.build(m, ranges, tflite.TFLiteOptions(), samples=calib)
    detail = make_interpreter(result.flatbuffer).get_tensor_details()[result.tensor_map["h"]["index"]]
    scale, zero = select.int8_params(*select.cut(ranges["h"], bounds["h"]))
    assert detail["quantization"][0] == pytest.approx(scale, rel=1e-6)
    assert detail["quantization"][1] == zero

    refs = [H.ort_run(m, s) for s in calib]
    names = sorted(n for n in ranges if n in runner.activations(m))
    scored = select.Scorer(m, names, calib, refs, runner.make_session, bounds)
    plain = select.Scorer(m, names, calib, refs, runner.make_session)
    cut = {n: select.cut(ranges[n], bounds.get(n)) for n in names}
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
