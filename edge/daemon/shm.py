"""Large tensors travel through shared memory instead of the pipe.

A 224x224x3 float frame is 600 KB; through a 64 KB pipe that is ten writer/reader hand-offs and
four copies per request, most of the daemon's overhead on image models. Instead, each worker
gets a shared-memory segment from its parent: the parent copies the batch in once, the frame
carries only offsets (``{"shm": name, "offset": n}`` per tensor), and the worker reads NumPy
views of the segment (no copy) until it answers. One request is in flight per worker, so one
segment per worker suffices; it grows (a new segment) when a batch does not fit.

Lifecycle: the parent creates and unlinks segments; Python's resource tracker unlinks them if
the parent dies without doing so. The worker only attaches. Offsets and sizes are checked
against the segment like any other frame field (``wire.decode``).
"""
from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

MIN_BYTES = 32 * 1024          # smaller payloads are cheaper inline in the frame
ALIGN = 64


class Outbound:
    """The parent's segment for one worker process."""

    def __init__(self):
        self.seg: shared_memory.SharedMemory | None = None

    def place(self, tensors: dict[str, np.ndarray]) -> list[dict] | None:
        """Copy tensors into the segment; their descriptions, or None to send them inline."""
        arrays = {k: np.asarray(v) for k, v in tensors.items()}
        total = sum(_aligned(a.nbytes) for a in arrays.values())
        if total < MIN_BYTES:
            return None
        if self.seg is None or self.seg.size < total:
            self.close()
            self.seg = shared_memory.SharedMemory(create=True, size=max(total * 2, 1 << 20))
        metas, offset = [], 0
        for name, arr in arrays.items():
            view = np.ndarray(arr.shape, dtype=arr.dtype, buffer=self.seg.buf, offset=offset)
            view[...] = arr
            metas.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                          "shm": self.seg.name, "offset": offset})
            offset += _aligned(arr.nbytes)
        return metas

    def close(self) -> None:
        if self.seg is not None:
            self.seg.close()
            try:
                self.seg.unlink()
            except FileNotFoundError:
                pass
            self.seg = None


class Inbound:
    """The worker's attachment to its parent's current segment."""

    def __init__(self):
        self.seg: shared_memory.SharedMemory | None = None

    def buffer(self, name: str) -> memoryview:
        if self.seg is None or self.seg.name.lstrip("/") != name.lstrip("/"):
            self.close()
            self.seg = shared_memory.SharedMemory(name=name)
        return self.seg.buf

    def close(self) -> None:
        if self.seg is not None:
            try:
                self.seg.close()
            except BufferError:        # a view is still alive; the mapping goes with the process
                pass
            self.seg = None


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
