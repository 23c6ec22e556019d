"""weights.per_channel_int8 in blocks of rows gives the bytes of the whole-matrix float64 formula
(issue 8: the blocks exist only to avoid an 800 MB float64 copy of VGG-19's fc6)."""
import numpy as np
import pytest

from converters.tflite import weights
from converters.tgraph import TTensor

RNG = np.random.default_rng(5)


def _reference(w: np.ndarray, axis: int):
    """The textbook formula: max |w| per channel / 127, round half to even, clip, all in float64."""
    w64 = w.astype(np.float64)
    scale = np.abs(np.moveaxis(w64, axis, 0).reshape(w.shape[axis], -1)).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0 / 127.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w64 / scale.reshape(shape)), -127, 127).astype(np.int8), scale.astype(np.float32)


@pytest.mark.parametrize("shape, axis", [((37, 50), 0), ((6, 3, 3, 20), 0), ((1, 3, 3, 24), 3), ((9, 2, 2, 5), 3)])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])        # one row at a time, ragged blocks, one block
def test_blocks_give_the_whole_matrix_bytes(shape, axis, chunk, monkeypatch):
    monkeypatch.setattr(weights, "CHUNK_ELEMENTS", chunk)
    w = RNG.normal(0, 0.3, shape).astype(np.float32)
    w[(slice(None),) * axis + (1,)] = 0.0                 # an all-zero channel
    w.flat[::11] = np.float32(0.5) * w.flat[::11].round()   # values on half steps: ties round to even
    want, want_scale = _reference(w, axis)
    t = TTensor("w", shape, data=w.copy())
    scale = weights.per_channel_int8(t, axis)
    assert t.dtype == "int8" and t.data.dtype == np.int8
    np.testing.assert_array_equal(t.data, want)
    np.testing.assert_array_equal(scale, want_scale)
    np.testing.assert_array_equal(t.quant.scale, want_scale)


def test_a_broadcast_splat_quantizes_without_being_laid_out_first():
    """A folded ConstantOfShape reaches the quantizer as a read-only broadcast view."""
    view = np.broadcast_to(np.float32(0.02), (300, 40))
    t = TTensor("w", view.shape, data=view)
    weights.per_channel_int8(t, 0)
    np.testing.assert_array_equal(t.data, _reference(np.ascontiguousarray(view), 0)[0])
