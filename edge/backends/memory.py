"""An in-memory backend for unit tests of the logic around a model (batching, routing, retries).

It runs a plain Python function over the feeds. It is *not* used to pretend a real model ran:
tests of inference results use the LiteRT or ONNX Runtime backends.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edge.backends.base import SpecsMixin, TensorSpec, check_feeds


class MemoryBackend(SpecsMixin):
    name = "memory"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self._in, self._out, self._fn = list(inputs), list(outputs), fn
        self.events: list[dict] = []
        self.calls = 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, _ = check_feeds(self._in, feeds)
        self.calls += 1
        return self._fn(feeds)

    def close(self) -> None:
        pass


def doubler(shape=(1, 4)) -> MemoryBackend:
    """x -> 2x on float32; handy in tests and in ``ganglion run --dry-run`` style demos."""
    spec_in = TensorSpec("x", "float32", tuple(shape))
    spec_out = TensorSpec("y", "float32", tuple(shape))
    return MemoryBackend([spec_in], [spec_out], lambda f: {"y": f["x"] * 2.0})
