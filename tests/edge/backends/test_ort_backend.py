"""The ONNX Runtime backend's accelerator honesty, on the real (CPU-only) onnxruntime here.

CUDA and TensorRT cannot run on this machine; what can be checked without a GPU is checked:
asking for them is a typed error naming them and listing what this build offers, falling back
is opt-in and reported, the TensorRT options (precision from the artifact, one engine-cache
folder per model) are built right, and a converted QDQ artifact on the CPU provider reproduces
the fidelity the converter recorded. (The GPU half: docs/daemon.md, "Accelerators".)
"""
import numpy as np
import onnxruntime as ort
import pytest

from core.errors import RuntimeBackendError, UsageError
from edge.backends import open_backend
from edge.backends import ort_backend as ob
from edge.daemon.app import Daemon
from edge.daemon.config import from_dict
from edge.daemon.outbox import MemoryOutbox
from tests.edge import models
from tests.edge.conftest import make_gpk
from tests.edge.daemon.helpers import Collector

X = np.random.default_rng(5).normal(size=(3, models.IN)).astype(np.float32)
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize("asked,missing", [(["tensorrt"], [TRT]), (["cuda"], [CUDA]),
                                           ([TRT, "cuda", "cpu"], [TRT, CUDA])])
def test_a_missing_accelerator_is_named_with_the_providers_this_build_has(dense_onnx, asked, missing):
    with pytest.raises(RuntimeBackendError) as info:
        open_backend(dense_onnx, providers=asked)
    err = info.value
    assert err.code == "runtime.provider_missing" and err.where == str(dense_onnx)
    assert err.message == f"execution provider(s) {', '.join(missing)} not available in this onnxruntime"
    for here in ort.get_available_providers():
        assert here in err.hint
    assert "onnxruntime-gpu" in err.hint and "allow_cpu_fallback" in err.hint


def test_fallback_is_opt_in_runs_on_the_cpu_and_says_so(dense_onnx):
    be = open_backend(dense_onnx, providers=["tensorrt", "cuda"], allow_cpu_fallback=True)
    assert be.providers == [CPU] and be._sess.get_providers() == [CPU]
    (ev,) = be.events
    assert ev["event"] == "delegate_fallback" and ev["delegate"] == f"{TRT},{CUDA}"
    assert ev["fallback"] == CPU and "not available in this onnxruntime" in ev["reason"]
    np.testing.assert_allclose(be.run({"x": X})["y"], models.reference(X), rtol=1e-5, atol=1e-5)


def test_a_provider_the_session_dropped_is_noticed():
    """onnxruntime-gpu with CUDA libraries that do not load keeps only the CPU, with a log line.
    (No GPU build here to make a session do that; the comparison itself is checked.)"""
    assert ob.not_started([TRT, CUDA, CPU], [CUDA, CPU]) == [TRT]
    assert ob.not_started([TRT, CUDA, CPU], [CPU]) == [TRT, CUDA]
    assert ob.not_started([CPU], [CPU]) == []


def test_cpu_alone_is_not_a_fallback(dense_onnx):
    be = open_backend(dense_onnx, providers=["cpu"], allow_cpu_fallback=True)
    assert be.providers == [CPU] and be.events == []


@pytest.mark.parametrize("allow", [False, True])
def test_an_unknown_provider_name_is_a_usage_error_even_with_fallback(dense_onnx, allow):
    with pytest.raises(UsageError) as info:
        open_backend(dense_onnx, providers=["tensorrtt"], allow_cpu_fallback=allow)
    assert info.value.code == "usage.provider" and "'tensorrtt'" in info.value.message
    assert "trt" in info.value.hint


def test_tensorrt_options_carry_precision_and_the_engine_cache():
    got = ob.provider_options([TRT, CUDA, CPU], cache_path="/var/cache/g/abc-ort1.31",
                              precision={"int8": True, "fp16": False})
    assert got == [(TRT, {"trt_fp16_enable": "False", "trt_int8_enable": "True",
                          "trt_int8_use_native_calibration_table": "False",
                          "trt_engine_cache_enable": "True", "trt_engine_cache_path": "/var/cache/g/abc-ort1.31",
                          "trt_timing_cache_enable": "True", "trt_timing_cache_path": "/var/cache/g/abc-ort1.31"}),
                   CUDA, CPU]
    plain = ob.provider_options([TRT], precision={"fp16": True})
    assert plain == [(TRT, {"trt_fp16_enable": "True", "trt_int8_enable": "False"})]
    assert ob.provider_options([CPU], cache_path="/x", precision={"int8": True}) == [CPU]


def test_options_are_ones_onnxruntime_accepts_for_the_cpu_provider(dense_onnx):
    """What can be checked here of the hand-over itself: the list shape goes into a real session."""
    sess = ort.InferenceSession(str(dense_onnx), providers=ob.provider_options([CPU], cache_path="/x"))
    assert sess.get_providers() == [CPU]


def test_precision_comes_from_the_artifact():
    qdq = {"quantization": {"mode": "int8", "qdq": {"profile": "tensorrt"}},
           "models": [{"format": "tflite"}, {"format": "onnx"}]}
    assert ob.trt_precision(qdq) == {"int8": True, "fp16": False}
    assert ob.trt_precision({"quantization": {"mode": "float16"}, "models": [{"format": "tflite"}]}) \
        == {"int8": False, "fp16": True}
    assert ob.trt_precision(None) == {"int8": False, "fp16": False}            # a bare .onnx: fp32
    assert ob.trt_precision({"quantization": {"mode": "dynamic"}, "models": [{"format": "onnx"}]}) \
        == {"int8": False, "fp16": False}


def test_tensorrt_refuses_an_onnxruntime_profile_qdq():
    bad = {"quantization": {"mode": "int8", "qdq": {"profile": "onnxruntime"}}}
    assert "symmetric int8" in ob.qdq_profile_problem(bad)
    assert ob.qdq_profile_problem({"quantization": {"qdq": {"profile": "tensorrt"}}}) is None
    assert ob.qdq_profile_problem(None) is None


def test_each_model_and_runtime_version_gets_its_own_engine_folder(tmp_path, dense_onnx):
    data = dense_onnx.read_bytes()
    a = ob.engine_cache_path(str(tmp_path), data, "1.31.1")
    assert a == ob.engine_cache_path(str(tmp_path), str(dense_onnx), "1.31.1")     # bytes or path: same
    assert a != ob.engine_cache_path(str(tmp_path), models.dense_onnx(seed=1), "1.31.1")
    assert a != ob.engine_cache_path(str(tmp_path), data, "1.32.0")
    assert a.startswith(str(tmp_path)) and a.endswith("-ort1.31.1")


@pytest.mark.parametrize("allow", [False, True])
def test_a_worker_asked_for_tensorrt_fails_clearly_or_reports_the_fallback(dense_onnx, allow):
    cfg = from_dict({"model": {"path": str(dense_onnx), "providers": ["tensorrt"], "allow_cpu_fallback": allow},
                     "workers": {"max_restarts": 1}}).require_model()
    outbox = MemoryOutbox()
    daemon = Daemon(cfg, outbox=outbox)
    if not allow:
        with pytest.raises(RuntimeBackendError) as info:
            daemon.start()
        assert info.value.code == "runtime.provider_missing" and TRT in info.value.message
        fatal = [e for e in outbox.of("events") if e["event"] == "worker_fatal"]
        assert fatal and fatal[0]["error"]["code"] == "runtime.provider_missing"
        return
    daemon.start()
    try:
        got = Collector()
        daemon.submit("t", X[:1], {}, got.cb(0))
        assert got.wait(1) and got.results[0].ok
    finally:
        daemon.stop()
        daemon.shutdown()
    (ev,) = [e for e in outbox.of("events") if e["event"] == "delegate_fallback"]
    assert ev["delegate"] == TRT and ev["fallback"] == CPU


@pytest.fixture(scope="module")
def digits_gpk(tmp_path_factory, digits_dir):
    """The trained digits CNN converted by the real converter: int8 QDQ (TensorRT profile) in a .gpk,
    with the converter's fidelity report on the committed holdout set in its manifest."""
    from converters import api
    from converters.config import ConvertConfig
    out = tmp_path_factory.mktemp("qdq") / "digits.gpk"
    api.convert(ConvertConfig(model=digits_dir / "digits_cnn.onnx", output=out, target="qdq",
                              calib=digits_dir / "calib.npz", holdout=digits_dir / "holdout.npz", progress=False))
    return out


def test_a_qdq_artifact_on_the_cpu_provider_reproduces_the_converters_fidelity(digits_gpk, digits_dir):
    """Through the device's door (open_backend, the CPU provider), outputs match the float model
    as closely as the converter measured at build time -- the same SQNR, not just 'close'."""
    from converters.verify import metrics
    be = open_backend(digits_gpk, providers=["cpu"])
    assert be.name == "onnxruntime" and be.provider_options == [CPU]
    assert ob.trt_precision(be.manifest) == {"int8": True, "fp16": False}     # what a Jetson would get
    with np.load(digits_dir / "holdout.npz", allow_pickle=False) as npz:
        feeds = {k: npz[k] for k in npz.files}
    ref_sess = ort.InferenceSession(str(digits_dir / "digits_cnn.onnx"), providers=[CPU])
    (out_name,) = [o.name for o in ref_sess.get_outputs()]
    (name,) = feeds                                     # the float model is fixed at batch 1
    ref = np.concatenate([ref_sess.run(None, {name: feeds[name][i:i + 1]})[0] for i in range(len(feeds[name]))])
    got = be.run(feeds)[out_name]
    recorded = be.manifest["fidelity"]["onnx"]["outputs"][out_name]
    measured = metrics(ref, got)
    assert measured["sqnr_db"] >= 20.0                                        # test_qdq's floor
    assert measured["sqnr_db"] == pytest.approx(recorded["sqnr_db"], abs=0.05)
    assert measured["top1_agreement"] == pytest.approx(recorded["top1_agreement"], abs=1e-6)


def test_the_jetson_board_on_a_machine_without_a_gpu(dense_onnx):
    """The board file asks for TensorRT, CUDA, CPU and an engine cache: here that is an error
    naming both accelerators, or (allowed) a CPU run that writes no engine-cache folder."""
    import os
    import boards
    board = boards.load("jetson-orin-nano")
    with pytest.raises(RuntimeBackendError) as info:
        open_backend(dense_onnx, board=board)
    assert info.value.code == "runtime.provider_missing" and f"{TRT}, {CUDA}" in info.value.message
    cache = board.runtime.engine_cache_dir
    existed = os.path.exists(cache)
    be = open_backend(dense_onnx, board=board, allow_cpu_fallback=True)
    assert be.providers == [CPU] and be.engine_cache is None and be.events[0]["delegate"] == f"{TRT},{CUDA}"
    assert os.path.exists(cache) == existed
