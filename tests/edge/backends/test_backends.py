"""Model backends against real interpreters: LiteRT (float, int8) and ONNX Runtime, numbers vs NumPy."""
import zipfile

import numpy as np
import pytest

from core import keys
from core.errors import ArtifactError, InputError, RuntimeBackendError, UsageError
from edge.backends import MemoryBackend, TensorSpec, check_feeds, dequantize, open_backend, quantize
from edge.backends.base import dequantize_outputs
from tests.edge import models
from tests.edge.conftest import make_gpk

X = np.random.default_rng(3).normal(size=(6, models.IN)).astype(np.float32)


@pytest.mark.parametrize("fixture", ["dense_tflite", "dense_onnx"])
@pytest.mark.parametrize("batch", [1, 6])
def test_float_backends_match_numpy(request, fixture, batch):
    be = open_backend(request.getfixturevalue(fixture))
    out = be.run({"x": X[:batch]})["y"]
    np.testing.assert_allclose(out, models.reference(X[:batch]), rtol=1e-5, atol=1e-5)
    assert out.shape == (batch, models.OUT)


def test_litert_batch_sizes_in_any_order_give_each_samples_own_answer(dense_tflite):
    """The backend remembers its current batch size instead of asking the interpreter each call;
    a stale size would feed a batch of 3 to a graph sized for 6 (or the reverse), which shows
    here as a wrong output shape or another sample's answer (each sample differs)."""
    be = open_backend(dense_tflite)
    for batch in (1, 6, 6, 3, 1, 2, 6, 1):
        out = be.run({"x": X[:batch]})["y"]
        assert out.shape == (batch, models.OUT)
        np.testing.assert_allclose(out, models.reference(X[:batch]), rtol=1e-5, atol=1e-5)
    # a later sample alone, after the batch of 1 above: the answer is its own, not sample 0's
    np.testing.assert_allclose(be.run({"x": X[5:6]})["y"], models.reference(X[5:6]), rtol=1e-5, atol=1e-5)


def test_fixed_batch_tflite_loops_over_samples(model_dir):
    be = open_backend(model_dir / "dense_fixed.tflite")
    assert be.inputs()[0].shape == (1, models.IN)
    out = be.run({"x": X})["y"]
    np.testing.assert_allclose(out, models.reference(X), rtol=1e-5, atol=1e-5)


def test_int8_io_quantizes_inputs_and_dequantizes_outputs(dense_int8):
    be = open_backend(dense_int8)
    spec_in, spec_out = be.inputs()[0], be.outputs()[0]
    assert spec_in.dtype == "int8" and spec_in.quantized
    x = np.clip(X, -3.9, 3.9)
    raw = be.run({"x": x})["y"]
    assert raw.dtype == np.int8
    y = dequantize_outputs(be.outputs(), {"y": raw})["y"]
    # int8 error budget: input step + weight step propagated, plus one output step
    assert np.abs(y - models.reference(x)).max() < 4 * spec_out.scale
    same = be.run({"x": quantize(x, spec_in)})["y"]       # pre-quantized input is taken as is
    np.testing.assert_array_equal(same, raw)


def test_quantize_roundtrip_within_half_a_step():
    spec = TensorSpec("t", "int8", (1, 4), scale=0.05, zero_point=-3)
    x = np.linspace(-8, 8, 161, dtype=np.float32)
    q = quantize(x, spec)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127       # saturates, no wrap-around
    lo, hi = (-128 + 3) * 0.05, (127 + 3) * 0.05
    inside = (x >= lo) & (x <= hi)
    assert np.abs(dequantize(q, spec)[inside] - x[inside]).max() <= 0.025 + 1e-6


@pytest.mark.parametrize("fixture", ["dense_tflite", "dense_onnx"])
def test_wrong_shape_is_a_typed_input_error(request, fixture):
    be = open_backend(request.getfixturevalue(fixture))
    with pytest.raises(InputError) as info:
        be.run({"x": np.zeros((1, 5), np.float32)})
    assert info.value.code == "input.shape" and "expected [N, 4]" in info.value.message
    with pytest.raises(InputError):
        be.run({"x": np.zeros((2, 4), np.float32), "extra": np.zeros(1)})
    out = be.run({"x": X[:1]})                               # and the backend still works
    assert out["y"].shape == (1, models.OUT)


def test_float_input_for_unquantized_integer_model_is_refused():
    spec = TensorSpec("x", "int32", (1, 2))
    with pytest.raises(InputError) as info:
        check_feeds([spec], {"x": np.zeros((1, 2), np.float32)})
    assert info.value.code == "input.dtype"


# ai_edge_litert's Delegate.__del__ trips over its own failed constructor; that is noise, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_delegate_is_an_error_unless_fallback_is_allowed(dense_tflite):
    with pytest.raises(RuntimeBackendError) as info:
        open_backend(dense_tflite, delegate="libganglion_no_such_delegate.so.1")
    assert info.value.code == "runtime.delegate_missing"
    assert "allow_cpu_fallback" in info.value.hint
    be = open_backend(dense_tflite, delegate="libganglion_no_such_delegate.so.1", allow_cpu_fallback=True)
    assert [e["event"] for e in be.events] == ["delegate_fallback"]
    assert be.events[0]["delegate"] == "libganglion_no_such_delegate.so.1"
    np.testing.assert_allclose(be.run({"x": X})["y"], models.reference(X), rtol=1e-5, atol=1e-5)


def test_missing_ort_provider_names_the_available_ones(dense_onnx):
    with pytest.raises(RuntimeBackendError) as info:
        open_backend(dense_onnx, providers=["tensorrt", "cuda"])
    assert info.value.code == "runtime.provider_missing"
    assert "CPUExecutionProvider" in info.value.hint
    be = open_backend(dense_onnx, providers=["tensorrt"], allow_cpu_fallback=True)
    assert be.providers == ["CPUExecutionProvider"] and be.events[0]["event"] == "delegate_fallback"


def test_gpk_picks_format_by_backend_and_checks_signature(tmp_path):
    priv, pub = keys.generate(tmp_path / "k.pem")
    signed = make_gpk(tmp_path / "m.gpk", key=keys.load_private(priv))
    assert open_backend(signed).name == "litert"
    ort = open_backend(signed, backend="onnxruntime", trusted_keys=[str(pub)])
    assert ort.name == "onnxruntime" and ort.manifest["labels"] == ["a", "b", "c"]
    np.testing.assert_allclose(ort.run({"x": X})["y"], models.reference(X), rtol=1e-5, atol=1e-5)
    unsigned = make_gpk(tmp_path / "u.gpk")
    with pytest.raises(Exception) as info:
        open_backend(unsigned, trusted_keys=[str(pub)])
    assert info.value.code == "artifact.signature_missing" and info.value.exit_code == 3
    only_onnx = make_gpk(tmp_path / "o.gpk", formats=("onnx",))
    assert open_backend(only_onnx).name == "onnxruntime"


def test_tampered_gpk_is_refused(tmp_path):
    path = make_gpk(tmp_path / "m.gpk")
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:                          # the compressed bytes of each member
        offsets = [i.header_offset + 30 + len(i.filename) + i.compress_size // 2 for i in zf.infolist()]
    for offset in offsets + [len(data) - 30]:                  # ... and the central directory
        broken = bytearray(data)
        broken[offset] ^= 0xFF
        path.write_bytes(bytes(broken))
        with pytest.raises(ArtifactError):
            open_backend(path)


def test_bad_sources_are_typed_errors(tmp_path, dense_tflite):
    with pytest.raises(InputError):
        open_backend(tmp_path / "nope.tflite")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(InputError):
        open_backend(tmp_path / "m.bin")
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(RuntimeBackendError):
        open_backend(tmp_path / "bad.tflite")
    with pytest.raises(UsageError):
        open_backend(dense_tflite, backend="onnxruntime")


def test_board_supplies_threads_and_backend(dense_tflite):
    be = open_backend(dense_tflite, board="x86_64-generic")
    assert be.threads == 2


def test_memory_backend_checks_feeds_like_the_real_ones():
    be = MemoryBackend([TensorSpec("x", "float32", (1, 2))], [TensorSpec("y", "float32", (1, 2))],
                       lambda f: {"y": f["x"] + 1})
    assert be.run({"x": np.zeros(2, np.float32)})["y"].tolist() == [[1.0, 1.0]]
    with pytest.raises(InputError):
        be.run({"x": np.zeros(3, np.float32)})
