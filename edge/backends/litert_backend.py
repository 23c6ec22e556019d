"""The LiteRT (TFLite) backend: XNNPACK on the CPU, external delegates loaded by path.

Delegates (Edge TPU ``libedgetpu.so.1``, a GPU delegate...) are loaded with LiteRT's
``load_delegate``. A delegate that is missing or refuses the model is an error by default: a board
that was meant to run on an accelerator silently running on its CPU is the kind of surprise that
costs a week. Only when ``allow_cpu_fallback`` is set do we run on the CPU, and we record a
``delegate_fallback`` event so the daemon reports it.

Batches: when the batch dimension is dynamic or the graph tolerates a resize, the whole batch
runs in one invoke; otherwise (a reshape baked to batch 1, say) we loop over samples, once
learned, without retrying the resize on every call.
"""
from __future__ import annotations

import numpy as np

from core.errors import InputError, RuntimeBackendError
from core.litert import load_delegate, make_interpreter
from edge.backends.base import SpecsMixin, TensorSpec, check_feeds, concat_outputs, split_batch


class LiteRTBackend(SpecsMixin):
    name = "litert"

    def __init__(self, model: bytes | str, *, threads: int | None = None, delegate: str | None = None,
                 allow_cpu_fallback: bool = False, use_xnnpack: bool = True, where: str = "<model>"):
        self.events: list[dict] = []
        self.where = where
        self.threads = threads
        self.delegate = None
        delegates = self._load_delegate(delegate, allow_cpu_fallback) if delegate else None
        try:
            self._interp = make_interpreter(model, num_threads=threads, delegates=delegates,
                                            use_xnnpack=use_xnnpack)
        except RuntimeBackendError as exc:
            if not delegates or not allow_cpu_fallback:
                exc.where = exc.where or where
                raise
            # The delegate loaded but could not take the model: same policy as a missing one.
            self._fallback(delegate, str(exc))
            self.delegate = None
            self._interp = make_interpreter(model, num_threads=threads, use_xnnpack=use_xnnpack)
        self._in = [_spec(d) for d in self._interp.get_input_details()]
        self._out = [_spec(d) for d in self._interp.get_output_details()]
        self._in_index = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        # Tensor indices survive a resize; caching them (and the current batch size) keeps the
        # get_*_details() calls -- a few us each, as long as a small model's whole inference --
        # off the per-request path.
        self._out_index = [(d["name"], d["index"]) for d in self._interp.get_output_details()]
        self._batch = self._built_batch()
        self._can_resize = True

    def _load_delegate(self, path: str, allow_cpu_fallback: bool) -> list | None:
        loaded, reason = load_delegate(path)
        if loaded is not None:
            self.delegate = path
            return [loaded]
        if not allow_cpu_fallback:
            raise RuntimeBackendError(
                f"the delegate {path} could not be loaded: {reason}", where=path,
                code="runtime.delegate_missing",
                hint="install the delegate library (see 'ganglion doctor'), or set "
                     "allow_cpu_fallback = true to run on the CPU")
        self._fallback(path, reason)
        return None

    def _fallback(self, path: str, reason: str) -> None:
        self.events.append({"event": "delegate_fallback", "delegate": path, "reason": reason,
                            "model": self.where})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, batch = check_feeds(self._in, feeds)
        if batch == self._batch or (self._can_resize and self._resize(batch)):
            return self._invoke(feeds)
        return concat_outputs([self._invoke(one) for one in split_batch(feeds, batch)])

    def _resize(self, batch: int) -> bool:
        if self._batch == batch:
            return True
        try:
            for spec in (s for s in self._in if s.shape):      # a 0-d input has no batch axis
                self._interp.resize_tensor_input(self._in_index[spec.name], [batch, *spec.sample_shape])
            self._interp.allocate_tensors()
            self._batch = batch
            return True
        except (ValueError, RuntimeError):
            self._can_resize = False
            for spec in self._in:      # back to the shape the model was built for
                self._interp.resize_tensor_input(self._in_index[spec.name], list(spec.shape))
            self._interp.allocate_tensors()
            self._batch = self._built_batch()
            return False

    def _built_batch(self) -> int:
        """The batch size of the first input with a batch axis (1 when every input is 0-d)."""
        return next((int(d["shape"][0]) for d in self._interp.get_input_details() if len(d["shape"])), 1)

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            for name, arr in feeds.items():
                self._interp.set_tensor(self._in_index[name], arr)
        except ValueError as exc:
            raise InputError(f"LiteRT refused the input: {exc}", code="input.shape",
                             where=self.where) from exc
        self._interp.invoke()
        return {name: self._interp.get_tensor(index) for name, index in self._out_index}

    def close(self) -> None:
        self._interp = None


def _spec(detail: dict) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    shape = tuple(int(s) for s in detail.get("shape_signature", detail["shape"]))
    if not shape:
        shape = tuple(int(s) for s in detail["shape"])
    return TensorSpec(name=detail["name"], dtype=np.dtype(detail["dtype"]).name, shape=shape,
                      scale=float(scale) if scale else None, zero_point=int(zero) if scale else None)
