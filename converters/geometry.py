"""Window geometry shared by the frontend and the TFLite lowering.

ONNX ``auto_pad`` SAME and TFLite's SAME padding use one rule: the output has ceil(in / stride)
positions and the padding that needs, ``total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``,
is split with the smaller half first (SAME_UPPER, TFLite) or last (SAME_LOWER). No onnx or LiteRT
import, so every package can use it.
"""
from __future__ import annotations

import math


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(begin, end) padding of one spatial axis under SAME_UPPER (and TFLite SAME)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def auto_pads(auto: str, spatial, k, s, d) -> list[int]:
    """ONNX pads [begin..., end...] for ``auto_pad`` SAME_UPPER or SAME_LOWER."""
    halves = [same_pads(spatial[i], k[i], s[i], d[i]) for i in range(len(spatial))]
    if auto == "SAME_LOWER":
        halves = [(end, begin) for begin, end in halves]
    return [b for b, _ in halves] + [e for _, e in halves]
