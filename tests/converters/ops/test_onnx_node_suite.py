"""The official ONNX backend node suite, run through the converter and the real LiteRT interpreter.

``GanglionBackend`` is an ``onnx.backend.base.Backend``: it compiles each one-node case to a
*float* TFLite flatbuffer with ``converters.tflite.build`` and runs it in LiteRT. The cases are
built in memory by ``onnx.backend.test.loader.load_model_tests(kind="node")`` (onnx >= 1.23 no
longer ships them as files).

Accounting, printed by ``test_node_suite_accounting`` (run with ``-s`` or ``-rA`` to see it):
  * out of scope  -- the case uses an op the converter does not claim (not in ``SUPPORTED``)
  * excluded      -- a case of a supported op that is not expected to pass, with the reason, in
                     the ``EXCLUDED`` table (or a non-float32 signature). Two kinds, both still run:
                       refused -- a variant the converter declines: the test asserts it fails
                                  with a typed ConvertError (never a wrong answer or a crash)
                       bug     -- a known defect, strict xfail: when it is fixed the case passes,
                                  the xfail fails, and the entry must be deleted
  * in scope      -- every other case must pass

Two honest adaptations make one-node cases look like the deployable graphs the converter is for:
  * the case's opset is converted down to 21 (the frontend's supported range) with
    ``onnx.version_converter`` when it is newer -- the ops tested here did not change meaning;
  * *parameter* inputs (weights, shapes, axes, pads, clip bounds, resize scales) become
    initializers with the case's values, as an exporter writes them. Data inputs stay inputs;
  * LayerNormalization's optional training outputs (Mean, InvStdDev) are dropped and only Y is
    compared: inference graphs never request them.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter
from onnx.backend.base import Backend, BackendRep

# The ops the converter claims (issue 2), plus those the frontend removes or folds ...
CLAIMED = frozenset(
    "Conv ConvTranspose Gemm MatMul Add Sub Mul Div Relu Clip LeakyRelu PRelu Sigmoid Tanh HardSigmoid "
    "HardSwish Erf Gelu Softmax LayerNormalization MaxPool AveragePool GlobalAveragePool ReduceMean "
    "ReduceMax Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Pad Resize Pow Sqrt "
    "BatchNormalization Identity Dropout Constant".split())


def _registered_ops() -> frozenset[str]:
    """... and every op with a registered lowering (a lowering is a claim too)."""
    import converters.tflite  # noqa: F401  (imports the lowerings in their intended order)
    from converters.lower.registry import LOWERINGS
    return frozenset(op for op in LOWERINGS if "::" not in op)


SUPPORTED = CLAIMED | _registered_ops()

# op -> input positions that real exported models hold as constants (weights and parameters).
PARAMETER_INPUTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "PRelu": (1,), "BatchNormalization": (1, 2, 3, 4),
    "LayerNormalization": (1, 2), "Clip": (1, 2), "Reshape": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "Split": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Resize": (1, 2, 3), "ReduceMean": (1,),
    "ReduceMax": (1,), "ReduceMin": (1,), "ReduceSum": (1,), "ReduceProd": (1,), "Dropout": (1, 2),
    "InstanceNormalization": (1, 2),
    # W, R, B, sequence_lens (and LSTM's peepholes P); initial_h / initial_c stay data inputs
    "LSTM": (1, 2, 3, 4, 7), "GRU": (1, 2, 3, 4), "RNN": (1, 2, 3, 4),
}

REFUSED, BUG = "refused", "bug"
# (case-name pattern, kind, why). "refused" cases must fail with a typed ConvertError.
EXCLUDED: list[tuple[str, str, str]] = [
    (r"test_(averagepool|maxpool)_3d_.*", REFUSED, "3-D (volumetric) pooling: TFLite has no 3-D pool builtin"),
    (r"test_convtranspose_3d", REFUSED, "3-D transposed convolution: TFLite has no 3-D TRANSPOSE_CONV"),
    (r"test_(averagepool|maxpool)_2d_dilations", REFUSED, "dilated pooling: TFLite pools have no dilation"),
    (r"test_batchnorm_(example|epsilon)_training_mode", REFUSED,
     "training-mode BatchNormalization (batch statistics, running-stat outputs): inference only"),
    (r"test_resize_.*cubic.*", REFUSED, "cubic Resize: TFLite has nearest and bilinear only"),
    (r"test_resize_.*antialias", REFUSED, "antialiased Resize: no TFLite equivalent"),
    (r"test_resize_tf_crop_and_resize.*", REFUSED, "tf_crop_and_resize: needs ROI crops (no builtin)"),
    (r"test_resize_.*_half_pixel_symmetric", REFUSED, "half_pixel_symmetric coordinates: no TFLite equivalent"),
    (r"test_resize_(downsample_scales_nearest|(up|down)sample_sizes_nearest(_not_larger)?"
     r"|upsample_sizes_nearest_axes_(2_3|3_2)|downsample_sizes_nearest_not_smaller)",
     REFUSED, "nearest Resize with half_pixel + round_prefer_floor (the ONNX default) at a non-integer "
     "scale: RESIZE_NEAREST_NEIGHBOR rounds half up (integer upsampling is exact and supported)"),
    (r"test_resize_upsample_sizes_nearest_(floor_align_corners|round_prefer_ceil_asymmetric|ceil_half_pixel)",
     REFUSED, "nearest Resize rounding/coordinate combination with no RESIZE_NEAREST_NEIGHBOR equivalent"),
    (r"test_elu(_example)?", REFUSED, "Elu with alpha != 1: TFLite's ELU has alpha fixed at 1"),
    (r"test_(max|min)_(example|one_input)", REFUSED, "variadic Max/Min with 1 or 3 inputs: MAXIMUM/MINIMUM "
     "take exactly two (exporters emit two-input Max/Min)"),
    (r"test_resize_downsample_sizes_linear_pytorch_half_pixel", REFUSED,
     "pytorch_half_pixel with an output size of 1 (differs from half_pixel only there)"),
    (r"test_(split_zero_size_splits_opset1[38]|reduce_.*empty_set.*|reshape_allowzero_reordered"
     r"|slice_start_out_of_bounds)", REFUSED, "zero-size tensors: TFLite shapes must be non-empty"),
    (r"test_spacetodepth_crd_mode_example", REFUSED,
     "SpaceToDepth mode=CRD exists only from opset 28; the frontend takes opsets 11-21"),
    (r"test_training_dropout(_default)?", REFUSED, "training-mode Dropout is random: inference only"),
    (r"test_resize_downsample_scales_linear(_align_corners)?", REFUSED,
     "linear Resize with scales != output/input size: ONNX maps coordinates with the given scale, "
     "RESIZE_BILINEAR with the size ratio"),
]
# Non-float32 cases that do convert and pass (integer Div/Pow/Pad; Gather with run-time int64
# indices, negative ones too): in scope, not excluded.
NON_FLOAT_IN_SCOPE = frozenset({"test_div_int32_trunc", "test_reflect_pad", "test_pow_types_int32_int32",
                                "test_max_int32", "test_max_int64",   # *_float16: half.py gives float32 I/O
                                "test_min_int32", "test_min_int64",
                                "test_gather_0", "test_gather_1", "test_gather_2d_indices",
                                "test_gather_negative_indices", "test_edge_pad",
                                "test_where_example", "test_where_long_example"}) | frozenset(
    # comparisons and boolean logic (bool outputs; float, int32/int64 or bool inputs: lower/logic.py)
    f"test_{op}{sfx}" for op in ("equal", "greater", "less", "greater_equal", "less_equal")
    for sfx in ("", "_bcast", "_expanded", "_bcast_expanded")
    if not (op in ("equal", "greater", "less") and "expanded" in sfx)) | frozenset(
    f"test_{op}{sfx}" for op in ("and", "or", "xor")
    for sfx in ("2d", "3d", "4d", "_bcast3v1d", "_bcast3v2d", "_bcast4v2d", "_bcast4v3d", "_bcast4v4d"))
# Ops whose newest version only added input types (bfloat16 etc.) after opset 21, and for which
# onnx.version_converter has no down-adapter: retargeting the opset import is exact for them.
TYPE_ONLY_SINCE_21 = frozenset({"GlobalMaxPool"})

NON_FLOAT_REASON = ("non-float32 signature: the float path compiles float32 graphs; integer tensors "
                    "appear only as constant shapes/indices, and int8 is covered by the per-op int8 tests")
TARGET_OPSET = 21
FLOAT = onnx.TensorProto.FLOAT


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _load_cases():
    from onnx.backend.test.loader import load_model_tests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the case generators overflow casts on purpose
        return load_model_tests(kind="node")


ALL_CASES = _load_cases()


def classify(case) -> tuple[str, str | None]:
    """('out_of_scope' | 'refused' | 'bug' | 'excluded' | 'in_scope', reason)."""
    ops = {n.op_type for n in case.model.graph.node}
    if not ops <= SUPPORTED:
        return "out_of_scope", "uses " + ", ".join(sorted(ops - SUPPORTED))
    for pattern, kind, reason in EXCLUDED:
        if re.fullmatch(pattern, case.name):
            return kind, reason
    if case.name in NON_FLOAT_IN_SCOPE:
        return "in_scope", None
    data_inputs = _data_input_names(case.model)
    signature = [vi for vi in case.model.graph.input if vi.name in data_inputs] + list(case.model.graph.output)
    if any(vi.type.tensor_type.elem_type != FLOAT for vi in signature):
        return "excluded", NON_FLOAT_REASON
    return "in_scope", None


# --- the backend adapter -------------------------------------------------------------------------
def _parameter_input_names(model: onnx.ModelProto) -> set[str]:
    names = set()
    for node in model.graph.node:
        for pos in PARAMETER_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos]:
                names.add(node.input[pos])
    return names


def _data_input_names(model: onnx.ModelProto) -> set[str]:
    inits = {i.name for i in model.graph.initializer}
    params = _parameter_input_names(model)
    return {vi.name for vi in model.graph.input if vi.name not in inits and vi.name not in params}


def bake_parameters(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Turn parameter inputs into initializers holding the case's values (as an exporter would)."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    params = _parameter_input_names(model)
    keep = [vi for vi in baked.graph.input if vi.name not in params or vi.name not in feeds]
    for name in params & set(feeds):
        baked.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds[name]), name))
    del baked.graph.input[:]
    baked.graph.input.extend(keep)
    _drop_training_outputs(baked)
    if _opset(baked) > TARGET_OPSET:
        baked = _downgrade(baked)
    return baked


def _downgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    if {n.op_type for n in model.graph.node} <= TYPE_ONLY_SINCE_21:
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = TARGET_OPSET
        return model
    try:
        return version_converter.convert_version(model, TARGET_OPSET)
    except Exception:   # no opset-21 form exists: the frontend's opset gate must refuse it, typed
        return model


def _drop_training_outputs(model: onnx.ModelProto) -> None:
    """LayerNormalization's Mean/InvStdDev outputs exist for training; inference uses only Y."""
    dropped = set()
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and len(node.output) > 1:
            dropped.update(o for o in node.output[1:] if o)
            del node.output[1:]
    kept = [o for o in model.graph.output if o.name not in dropped]
    del model.graph.output[:]
    model.graph.output.extend(kept)


class GanglionRep(BackendRep):
    def __init__(self, result, inputs: list[str], outputs: list[str]):
        from core.litert import make_interpreter
        self.result, self.inputs, self.outputs = result, inputs, outputs
        self.interp = make_interpreter(result.flatbuffer)

    def run(self, inputs, **kwargs):
        feeds = inputs if isinstance(inputs, dict) else dict(zip(self.inputs, inputs))
        tmap = self.result.tensor_map
        for name in self.inputs:
            entry = tmap[name]
            value = np.asarray(feeds[name])
            if entry.get("perm"):
                value = np.transpose(value, entry["perm"])
            # np.require, not ascontiguousarray: the latter turns a 0-d scalar into shape (1,).
            self.interp.set_tensor(entry["index"], np.require(value, requirements="C"))
        self.interp.invoke()
        results = {}
        for name in self.outputs:
            entry = tmap[name]
            value = self.interp.get_tensor(entry["index"])
            if entry.get("perm"):
                value = np.transpose(value, np.argsort(entry["perm"]))
            results[name] = value
        return results


class GanglionBackend(Backend):
    """Compile with the converter (float, ONNX layout) and run in LiteRT."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        from converters import frontend, tflite
        prepared = frontend.prepare(model, where=model.graph.name)
        result = tflite.build(prepared, None, tflite.TFLiteOptions(quantize="none"))
        inits = {i.name for i in prepared.graph.initializer}
        inputs = [vi.name for vi in prepared.graph.input if vi.name not in inits]
        return GanglionRep(result, inputs, [o.name for o in prepared.graph.output])

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        names = [vi.name for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
        feeds = dict(zip(names, inputs))
        baked = bake_parameters(model, feeds)
        rep = cls.prepare(baked, device)
        return rep.run({k: v for k, v in feeds.items() if k in rep.inputs})

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


# --- the tests -----------------------------------------------------------------------------------
def _params(kinds: tuple[str, ...]):
    params = []
    for case in ALL_CASES:
        kind, reason = classify(case)
        if kind not in kinds:
            continue
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if kind in (BUG, "excluded") else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def check_case(case) -> None:
    output_names = [o.name for o in case.model.graph.output]
    for inputs, expected in case.data_sets:
        got = GanglionBackend.run_model(case.model, inputs)
        compared = [(got[name], e) for name, e in zip(output_names, expected) if name in got]
        assert compared and len(got) == len(compared)
        for g, e in compared:
            assert g.dtype == e.dtype, f"dtype {g.dtype} != {e.dtype}"
            assert g.shape == e.shape, f"shape {g.shape} != {e.shape}"
            # LiteRT's float kernels (XNNPACK) reassociate sums: allow 1e-5 absolute on top of the
            # case's own tolerances, which assume a reference-exact evaluator.
            np.testing.assert_allclose(g, e, rtol=max(case.rtol, 1e-3), atol=max(case.atol, 1e-5))


@pytest.mark.parametrize("case", _params(("in_scope", BUG, "excluded")))
def test_node_case(case):
    check_case(case)


@pytest.mark.parametrize("case", _params((REFUSED,)))
def test_node_case_refused_cleanly(case):
    """A variant the converter declines must fail with a typed error, not a crash or wrong numbers."""
    from converters.errors import ConvertError
    inputs, _ = case.data_sets[0]
    with pytest.raises(ConvertError) as err:
        GanglionBackend.run_model(case.model, inputs)
    assert err.value.where or err.value.hint


def test_node_suite_accounting():
    """Prints the counts; fails on stale exclusions (a pattern that matches no case)."""
    kinds, reasons = Counter(), Counter()
    for case in ALL_CASES:
        kind, reason = classify(case)
        kinds[kind] += 1
        if kind in (REFUSED, BUG, "excluded"):
            reasons[(kind, reason)] += 1
    excluded = kinds[REFUSED] + kinds[BUG] + kinds["excluded"]
    print(f"\nONNX node suite: {len(ALL_CASES)} cases; in scope (must pass) {kinds['in_scope']}, "
          f"excluded {excluded} (refused with a typed error {kinds[REFUSED]}, known bugs {kinds[BUG]}, "
          f"non-float32 {kinds['excluded']}), out of scope (unsupported ops) {kinds['out_of_scope']}")
    for (kind, reason), n in reasons.most_common():
        print(f"  {kind:<8} {n:3d}: {reason}")
    stale = [p for p, _, _ in EXCLUDED if not any(re.fullmatch(p, c.name) for c in ALL_CASES)]
    assert stale == []
    assert kinds["in_scope"] > 100
