"""The ONNX Runtime backend: CPU here; CUDA and TensorRT execution providers on Jetson.

A requested provider that this onnxruntime build does not offer is an error naming the ones it
does offer; we fall back to the CPU only when the caller allows it, and then record a
``delegate_fallback`` event (the same event the LiteRT backend uses, so dashboards need one rule).
TensorRT builds engines on first use, which takes minutes on a Jetson; ``engine_cache_dir`` keeps
them across restarts (a crashed worker must not pay that again).
"""
from __future__ import annotations

import os

import numpy as np

from edge.backends.base import SpecsMixin, TensorSpec, check_feeds, concat_outputs, split_batch
from edge.errors import InputError, RuntimeBackendError

# Short names accepted in config and flags.
ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
           "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(int16)": "int16"}


def import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeBackendError("onnxruntime is not installed", code="runtime.no_onnxruntime",
                                  hint="pip install 'ganglion-edge[ort]'") from exc
    return onnxruntime


class OnnxRuntimeBackend(SpecsMixin):
    name = "onnxruntime"

    def __init__(self, model: bytes | str, *, threads: int | None = None, providers: list[str] | None = None,
                 allow_cpu_fallback: bool = False, engine_cache_dir: str | None = None,
                 where: str = "<model>"):
        ort = import_ort()
        self.events: list[dict] = []
        self.where = where
        self.providers = self._resolve(ort, providers or ["cpu"], allow_cpu_fallback)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(model, sess_options=opts,
                                              providers=self._with_options(engine_cache_dir))
        except Exception as exc:   # onnxruntime raises its own non-exported exception classes
            raise RuntimeBackendError(f"ONNX Runtime could not load the model: {exc}", where=where,
                                      code="runtime.model_load",
                                      hint="run 'ganglion inspect' on the file; re-convert it") from exc
        self._in = [_spec(i) for i in self._sess.get_inputs()]
        self._out = [_spec(o) for o in self._sess.get_outputs()]
        self._out_names = [o.name for o in self._out]

    def _resolve(self, ort, requested: list[str], allow_cpu_fallback: bool) -> list[str]:
        available = ort.get_available_providers()
        wanted = [ALIASES.get(p.lower(), p) for p in requested]
        missing = [p for p in wanted if p not in available]
        if not missing:
            return wanted
        if not allow_cpu_fallback:
            raise RuntimeBackendError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime",
                where=self.where, code="runtime.provider_missing",
                hint=f"available here: {', '.join(available)}; install onnxruntime-gpu for CUDA/TensorRT, "
                     "or set allow_cpu_fallback = true")
        self.events.append({"event": "delegate_fallback", "delegate": ",".join(missing),
                            "reason": f"available providers: {', '.join(available)}", "model": self.where})
        kept = [p for p in wanted if p in available]
        return kept + ["CPUExecutionProvider"] if "CPUExecutionProvider" not in kept else kept

    def _with_options(self, cache_dir: str | None) -> list:
        out = []
        for p in self.providers:
            if p == "TensorrtExecutionProvider" and cache_dir:
                os.makedirs(cache_dir, exist_ok=True)
                out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir,
                                "trt_timing_cache_enable": True, "trt_timing_cache_path": cache_dir}))
            else:
                out.append(p)
        return out

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
