"""The ONNX Runtime backend: CPU here; CUDA and TensorRT execution providers on Jetson.

Accelerators are honest (the same policy as LiteRT delegates): a requested provider that this
onnxruntime build does not offer is a ``runtime.provider_missing`` error naming it and listing
the ones it does offer; only with ``allow_cpu_fallback`` do we run without it, and then record a
``delegate_fallback`` event (the LiteRT backend's event, so dashboards need one rule). A name
ONNX Runtime does not know at all (a typo) is a ``usage.provider`` error, never a fallback.

TensorRT options come from the artifact (``provider_options``):
- precision: an int8 QDQ artifact turns on ``trt_int8_enable`` (TensorRT's explicit
  quantization reads the scales from the Q/DQ pairs; no calibration table), a float16 artifact
  ``trt_fp16_enable``. fp16 is not turned on for an int8 artifact's float-kept layers: they were
  kept float for accuracy, and the fidelity report was measured with them in fp32.
- TensorRT takes only symmetric int8, so a QDQ artifact built with ``--qdq-profile onnxruntime``
  (uint8 activations) cannot run on it: ``runtime.qdq_profile`` (or a fallback, when allowed).
- engine cache: building engines takes minutes on a Jetson, so ``engine_cache_dir`` keeps them
  (and TensorRT's timing cache) across restarts. ONNX Runtime does not notice when a model
  changes under a cached engine; each model gets its own folder named by its sha256 and the
  onnxruntime version, so a deployed model never runs on an engine built from the previous one.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from core.errors import InputError, RuntimeBackendError, UsageError
from edge.backends.base import SpecsMixin, TensorSpec, check_feeds, concat_outputs, split_batch

# Short names accepted in config and flags.
ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
           "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}
TRT = "TensorrtExecutionProvider"

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(int16)": "int16"}


def import_ort():
    try:
        import onnxruntime      # optional on a device: the [ort] extra
    except ImportError as exc:
        raise RuntimeBackendError("onnxruntime is not installed", code="runtime.no_onnxruntime",
                                  hint="pip install 'ganglion-edge[ort]'") from exc
    return onnxruntime


def canonical(name: str, known: list[str]) -> str:
    """``"trt"`` -> ``"TensorrtExecutionProvider"``; a name ONNX Runtime does not know -> UsageError."""
    full = ALIASES.get(name.lower(), name)
    if full not in known:
        raise UsageError(f"unknown execution provider {name!r}", where="model.providers", code="usage.provider",
                         hint=f"use {', '.join(sorted(ALIASES))} or a full ONNX Runtime provider name")
    return full


def trt_precision(manifest: dict | None) -> dict[str, bool]:
    """TensorRT precision flags an artifact asks for (see the module docstring)."""
    quant = (manifest or {}).get("quantization") or {}
    formats = {m.get("format") for m in (manifest or {}).get("models", [])}
    qdq = "qdq" in quant or (quant.get("mode") == "int8" and "onnx" in formats)
    return {"int8": qdq and quant.get("mode", "int8") == "int8", "fp16": quant.get("mode") == "float16"}


def qdq_profile_problem(manifest: dict | None) -> str | None:
    """Why TensorRT cannot take this artifact's QDQ model, or None."""
    profile = (((manifest or {}).get("quantization") or {}).get("qdq") or {}).get("profile")
    if profile and profile != "tensorrt":
        return (f"the QDQ model was built with profile {profile!r} (asymmetric uint8 activations); "
                "TensorRT takes only symmetric int8")
    return None


def engine_cache_path(cache_dir: str, model: bytes | str, ort_version: str) -> str:
    """``<cache_dir>/<model sha256[:16]>-ort<version>``: one folder per model and runtime."""
    digest = hashlib.sha256()
    if isinstance(model, (bytes, bytearray)):
        digest.update(model)
    else:
        with open(model, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return os.path.join(cache_dir, f"{digest.hexdigest()[:16]}-ort{ort_version}")


def provider_options(providers: list[str], *, cache_path: str | None = None,
                     precision: dict[str, bool] | None = None) -> list:
    """The ``providers=`` list for ``InferenceSession``: names, or (name, options) for TensorRT.
    Values are strings, as ONNX Runtime's C API receives them."""
    out: list = []
    for p in providers:
        if p != TRT:
            out.append(p)
            continue
        opts = {"trt_fp16_enable": _flag((precision or {}).get("fp16")),
                "trt_int8_enable": _flag((precision or {}).get("int8"))}
        if (precision or {}).get("int8"):
            opts["trt_int8_use_native_calibration_table"] = "False"     # explicit (QDQ) scales
        if cache_path:
            opts.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache_path,
                         "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache_path})
        out.append((p, opts))
    return out


def not_started(requested: list[str], active: list[str]) -> list[str]:
    """Requested providers a session did not keep (see ``OnnxRuntimeBackend._check_started``)."""
    return [p for p in requested if p not in active]


def _flag(value) -> str:
    return "True" if value else "False"


class OnnxRuntimeBackend(SpecsMixin):
    name = "onnxruntime"

    def __init__(self, model: bytes | str, *, threads: int | None = None, providers: list[str] | None = None,
                 allow_cpu_fallback: bool = False, engine_cache_dir: str | None = None,
                 manifest: dict | None = None, where: str = "<model>"):
        ort = import_ort()
        self.events: list[dict] = []
        self.where = where
        self.providers = self._resolve(ort, providers or ["cpu"], allow_cpu_fallback, manifest)
        self.engine_cache = None
        if TRT in self.providers and engine_cache_dir:
            self.engine_cache = engine_cache_path(engine_cache_dir, model, ort.__version__)
            os.makedirs(self.engine_cache, exist_ok=True)
        self.provider_options = provider_options(self.providers, cache_path=self.engine_cache,
                                                 precision=trt_precision(manifest))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(model, sess_options=opts, providers=self.provider_options)
        except Exception as exc:   # onnxruntime raises its own non-exported exception classes
            raise RuntimeBackendError(f"ONNX Runtime could not load the model: {exc}", where=where,
                                      code="runtime.model_load",
                                      hint="run 'ganglion inspect' on the file; re-convert it") from exc
        self._check_started(self._sess.get_providers(), allow_cpu_fallback)
        self._in = [_spec(i) for i in self._sess.get_inputs()]
        self._out = [_spec(o) for o in self._sess.get_outputs()]
        self._out_names = [o.name for o in self._out]

    def _resolve(self, ort, requested: list[str], allow_cpu_fallback: bool, manifest: dict | None) -> list[str]:
        available = ort.get_available_providers()
        wanted = [canonical(p, ort.get_all_providers()) for p in requested]
        unusable = {p: f"not available in this onnxruntime (available: {', '.join(available)})"
                    for p in wanted if p not in available}
        if TRT in wanted and TRT not in unusable and qdq_profile_problem(manifest):
            unusable[TRT] = qdq_profile_problem(manifest)
        if not unusable:
            return wanted
        if not allow_cpu_fallback:
            raise self._unusable_error(unusable, available)
        kept = [p for p in wanted if p not in unusable]
        used = kept if "CPUExecutionProvider" in kept else kept + ["CPUExecutionProvider"]
        self.events.append({"event": "delegate_fallback", "delegate": ",".join(unusable),
                            "reason": "; ".join(f"{p}: {why}" for p, why in unusable.items()),
                            "fallback": ",".join(used), "model": self.where})
        return used

    def _check_started(self, active: list[str], allow_cpu_fallback: bool) -> None:
        """onnxruntime-gpu lists CUDA/TensorRT as available even when their libraries (CUDA, cuDNN,
        TensorRT) do not load; the session then drops them with a log warning and runs on the CPU.
        The session's active providers are the truth: same policy as a missing provider."""
        dropped = not_started(self.providers, active)
        if not dropped:
            return
        if not allow_cpu_fallback:
            raise RuntimeBackendError(
                f"execution provider(s) {', '.join(dropped)} did not start (the session runs on "
                f"{', '.join(active)})", where=self.where, code="runtime.provider_failed",
                hint="their libraries did not load: check the CUDA/cuDNN/TensorRT versions this onnxruntime "
                     "was built for (JetPack) and LD_LIBRARY_PATH, or set allow_cpu_fallback = true")
        self.events.append({"event": "delegate_fallback", "delegate": ",".join(dropped),
                            "reason": "did not start (its libraries did not load)", "fallback": ",".join(active),
                            "model": self.where})
        self.providers = list(active)

    def _unusable_error(self, unusable: dict[str, str], available: list[str]) -> RuntimeBackendError:
        if any(p in available for p in unusable):       # present, but cannot take this artifact
            return RuntimeBackendError(
                "; ".join(unusable.values()), where=self.where, code="runtime.qdq_profile",
                hint="re-convert with '--qdq-profile tensorrt', or set allow_cpu_fallback = true")
        return RuntimeBackendError(
            f"execution provider(s) {', '.join(unusable)} not available in this onnxruntime",
            where=self.where, code="runtime.provider_missing",
            hint=f"available here: {', '.join(available)}; install onnxruntime-gpu for CUDA/TensorRT "
                 "(on a Jetson: NVIDIA's build), or set allow_cpu_fallback = true")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, batch = check_feeds(self._in, feeds)
        fixed = self._in[0].shape[0] if self._in and self._in[0].shape else -1
        if fixed in (-1, batch):
            return self._invoke(feeds)
        return concat_outputs([self._invoke(one) for one in split_batch(feeds, batch)])

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._sess.run(self._out_names, feeds)
        except Exception as exc:   # InvalidArgument etc. are not importable from a stable path
            raise InputError(f"ONNX Runtime refused the input: {exc}", where=self.where,
                             code="input.rejected") from exc
        return dict(zip(self._out_names, values))

    def close(self) -> None:
        self._sess = None


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, dtype=_ORT_DTYPES.get(arg.type, arg.type), shape=shape)
