"""Large tensors travel through shared memory instead of the pipe.

A 224x224x3 float frame is 600 KB; through a 64 KB pipe that is ten writer/reader hand-offs and
four copies per request, most of the daemon's overhead on image models. Instead, each worker
gets a shared-memory segment from its parent: the parent copies the batch in once, the frame
carries only offsets (``{"shm": name, "offset": n}`` per tensor), and the worker reads NumPy
views of the segment (no copy) until it answers. Up to two requests are in flight per worker
(the dispatcher writes the next one while the worker computes), so each worker has two segments
used in turn -- the parent refills a segment only after the request that used it was answered;
a segment grows (a new one) when a batch does not fit. The worker keeps both attached, because
attaching costs a shm_open and an mmap, more than a small model's inference.

Lifecycle: the parent creates and unlinks segments; Python's resource tracker unlinks them if
the parent dies without doing so. The worker only attaches. Offsets and sizes are checked
against the segment like any other frame field (``wire.decode``).
"""
from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

MIN_BYTES = 32 * 1024          # smaller payloads are cheaper inline in the frame
ALIGN = 64


SLOTS = 2                      # requests in flight per worker, at most


class Outbound:
    """The parent's segments for one worker process, one per in-flight slot."""

    def __init__(self):
        self.segs: list[shared_memory.SharedMemory | None] = [None] * SLOTS

    def place(self, tensors: dict, slot: int = 0) -> list[dict] | None:
        """Copy tensors into segment ``slot``; their descriptions, or None to send them inline.

        A tensor given as a list of arrays (a micro-batch's requests) is stacked along the batch
        axis as it is copied in: one copy per batch, not a concatenation and then a copy."""
        parts = {k: v if isinstance(v, list) else [np.asarray(v)] for k, v in tensors.items()}
        sizes = {k: sum(p.nbytes for p in ps) for k, ps in parts.items()}
        total = sum(_aligned(n) for n in sizes.values())
        if total < MIN_BYTES:
            return None
        seg = self.segs[slot]
        if seg is None or seg.size < total:
            self._drop(slot)
            seg = self.segs[slot] = shared_memory.SharedMemory(create=True, size=max(total * 2, 1 << 20))
        metas, offset = [], 0
        for name, ps in parts.items():
            first = ps[0]
            shape = first.shape if len(ps) == 1 else (sum(len(p) for p in ps), *first.shape[1:])
            view = np.ndarray(shape, dtype=first.dtype, buffer=seg.buf, offset=offset)
            if len(ps) == 1:
                view[...] = first
            else:
                row = 0
                for p in ps:
                    view[row:row + len(p)] = p
                    row += len(p)
            metas.append({"name": name, "dtype": first.dtype.name, "shape": list(shape),
                          "shm": seg.name, "offset": offset})
            offset += _aligned(sizes[name])
        return metas

    def _drop(self, slot: int) -> None:
        seg, self.segs[slot] = self.segs[slot], None
        if seg is not None:
            seg.close()
            try:
                seg.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        for slot in range(SLOTS):
            self._drop(slot)


class Inbound:
    """The worker's attachments to its parent's current segments (the last ``SLOTS`` named)."""

    def __init__(self):
        self.segs: dict[str, shared_memory.SharedMemory] = {}

    def buffer(self, name: str) -> memoryview:
        key = name.lstrip("/")
        seg = self.segs.get(key)
        if seg is None:
            while len(self.segs) >= SLOTS:          # a replaced (grown) segment: let it go
                _close(self.segs.pop(next(iter(self.segs))))
            seg = self.segs[key] = shared_memory.SharedMemory(name=name)
        return seg.buf

    def close(self) -> None:
        while self.segs:
            _close(self.segs.pop(next(iter(self.segs))))


def _close(seg: shared_memory.SharedMemory) -> None:
    try:
        seg.close()
    except BufferError:        # a view is still alive; the mapping goes with the process
        pass


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
