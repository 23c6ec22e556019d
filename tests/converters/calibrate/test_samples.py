"""Lazy calibration samples (calibrate/samples.py through load_dataset): the values are those of the
file, every pass reads them again, and nothing holds the whole data set."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from converters.calibrate.data import TensorSpec, load_dataset
from converters.calibrate.samples import Samples, Spill
from converters.errors import CalibrationDataError

IMAGE = [TensorSpec("image", (1, 3, 16, 16))]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["npy", "npz", "npz-compressed", "npy-fortran"])
def test_every_pass_reads_the_same_values(tmp_path, kind):
    data = rand(20, 3, 16, 16)
    path = tmp_path / ("x.npy" if kind.startswith("npy") else "x.npz")
    if kind == "npy":
        np.save(path, data)
    elif kind == "npy-fortran":
        np.save(path, np.asfortranarray(data))
    elif kind == "npz":
        np.savez(path, image=data)
    else:
        np.savez_compressed(path, image=data)
    samples = load_dataset(path, IMAGE)
    assert isinstance(samples, Samples) and len(samples) == 20
    for _ in range(2):                  # re-iterable: a second pass reads the file again
        got = np.stack([s["image"][0] for s in samples])
        np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(samples[-1]["image"][0], data[19])


def test_slices_are_lazy_views_with_the_right_rows(tmp_path):
    data = rand(30, 3, 16, 16)
    np.save(tmp_path / "x.npy", data)
    samples = load_dataset(tmp_path / "x.npy", IMAGE, limit=25)
    part = samples[5:9]
    assert isinstance(part, Samples) and len(part) == 4
    np.testing.assert_array_equal(np.stack([s["image"][0] for s in part]), data[5:9])
    assert len(samples[:100]) == 25 and len(samples[30:]) == 0
    np.testing.assert_array_equal(samples[::10][1]["image"][0], data[10])
    with pytest.raises(IndexError):
        samples[25]


def test_two_inputs_stay_aligned_sample_by_sample(tmp_path):
    specs = [TensorSpec("a", (1, 4)), TensorSpec("ids", (1, 2), "int64")]
    a, ids = rand(11, 4), np.arange(22).reshape(11, 2)
    np.savez(tmp_path / "d.npz", a=a, ids=ids.astype(np.int32))     # int32 -> int64: a safe cast
    for k, sample in enumerate(load_dataset(tmp_path / "d.npz", specs)):
        np.testing.assert_array_equal(sample["a"][0], a[k])
        assert sample["ids"].dtype == np.int64 and sample["ids"].tolist() == [ids[k].tolist()]


def test_a_pass_holds_one_sample_not_the_data_set(tmp_path):
    data = rand(64, 3, 64, 64)                         # 3 MB in all, 48 KB a sample
    np.save(tmp_path / "x.npy", data)
    del data
    samples = load_dataset(tmp_path / "x.npy", [TensorSpec("image", (1, 3, 64, 64))])
    tracemalloc.start()
    total = sum(float(s["image"][0, 0, 0, 0]) for s in samples)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.isfinite(total) and peak < 1_000_000, peak


def test_a_file_truncated_after_loading_fails_with_the_sample(tmp_path):
    np.save(tmp_path / "x.npy", rand(10, 3, 16, 16))
    samples = load_dataset(tmp_path / "x.npy", IMAGE)
    size = (tmp_path / "x.npy").stat().st_size
    with open(tmp_path / "x.npy", "r+b") as f:
        f.truncate(size - 3 * 16 * 16 * 4)
    with pytest.raises(CalibrationDataError, match="before sample 9"):
        list(samples)


def test_spilled_arrays_come_back_as_they_went_in():
    spill = Spill()
    rng = np.random.default_rng(3)
    items = [[rng.normal(size=(2, 3)).astype(np.float32), np.arange(5, dtype=np.int64)[::2]],
             [np.array(7.5, np.float32), np.zeros((0, 4), np.float32)],
             []]
    for arrays in items:
        spill.append(arrays)
    assert len(spill) == 3 and spill.end == 24 + 24 + 4
    for got, want in zip(spill, items):                     # read back one sample at a time
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(spill[-3][1], [0, 2, 4])
    assert [len(a) for a in spill[1:]] == [2, 0]
    spill.close()
