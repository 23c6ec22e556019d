"""load_dataset and PreprocessSpec on real files written to a temp folder."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from converters.calibrate.data import (MIN_SAMPLES, CalibrationCastWarning, TensorSpec, input_specs,
                                       load_dataset)
from converters.calibrate.preprocess import PreprocessSpec
from converters.errors import CalibrationDataError
from core.errors import UsageError

IMAGE = [TensorSpec("image", (1, 3, 8, 8))]


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("shape", [(10, 1, 3, 8, 8), (10, 3, 8, 8)])
def test_npy_stacks_with_or_without_batch_dim(tmp_path, shape):
    data = rand(*shape)
    np.save(tmp_path / "x.npy", data)
    samples = load_dataset(tmp_path / "x.npy", IMAGE)
    assert len(samples) == 10
    assert all(s["image"].shape == (1, 3, 8, 8) and s["image"].dtype == np.float32 for s in samples)
    np.testing.assert_array_equal(samples[3]["image"].reshape(-1), data[3].reshape(-1))


def test_npy_single_sample_and_limit(tmp_path):
    np.save(tmp_path / "one.npy", rand(1, 3, 8, 8))
    assert len(load_dataset(tmp_path / "one.npy", IMAGE, min_samples=1)) == 1
    np.save(tmp_path / "many.npy", rand(50, 3, 8, 8))
    assert len(load_dataset(tmp_path / "many.npy", IMAGE, limit=12)) == 12


def test_npz_two_inputs(tmp_path):
    specs = [TensorSpec("a", (1, 4)), TensorSpec("ids", (1, 2), "int64")]
    np.savez(tmp_path / "d.npz", a=rand(9, 4), ids=np.arange(18).reshape(9, 2), labels=np.zeros(9))
    samples = load_dataset(tmp_path / "d.npz", specs)
    assert len(samples) == 9 and set(samples[0]) == {"a", "ids"}
    assert samples[4]["ids"].tolist() == [[8, 9]] and samples[4]["ids"].dtype == np.int64


def error_of(tmp_path, name, specs=IMAGE, **kwargs) -> CalibrationDataError:
    with pytest.raises(CalibrationDataError) as info:
        load_dataset(tmp_path / name, specs, **kwargs)
    assert info.value.where and name in info.value.where and info.value.hint
    return info.value


def test_wrong_shape_names_input_expected_and_got(tmp_path):
    np.save(tmp_path / "x.npy", rand(10, 3, 9, 8))
    message = error_of(tmp_path, "x.npy").message
    assert "'image'" in message and "[1, 3, 8, 8]" in message and "[10, 3, 9, 8]" in message


def test_too_few_samples(tmp_path):
    np.save(tmp_path / "x.npy", rand(MIN_SAMPLES - 1, 3, 8, 8))
    assert f"at least {MIN_SAMPLES}" in error_of(tmp_path, "x.npy").message


def test_nan_and_inf_are_refused(tmp_path):
    data = rand(10, 3, 8, 8)
    data[6, 0, 0, 0] = np.nan
    data[8, 1, 2, 3] = np.inf
    np.save(tmp_path / "x.npy", data)
    assert "2 sample(s)" in error_of(tmp_path, "x.npy").message and "sample 6" in error_of(tmp_path, "x.npy").message


def test_safe_casts_warn_and_unsafe_casts_fail(tmp_path):
    np.save(tmp_path / "f64.npy", rand(10, 3, 8, 8, dtype=np.float64))
    with pytest.warns(CalibrationCastWarning, match="float64 data cast to float32"):
        samples = load_dataset(tmp_path / "f64.npy", IMAGE)
    assert samples[0]["image"].dtype == np.float32
    np.save(tmp_path / "u8.npy", np.zeros((10, 3, 8, 8), np.uint8))
    with pytest.warns(CalibrationCastWarning, match="not normalised"):
        load_dataset(tmp_path / "u8.npy", IMAGE)
    np.save(tmp_path / "f.npy", rand(10, 2))
    assert "does not cast safely" in error_of(tmp_path, "f.npy", [TensorSpec("ids", (1, 2), "int64")]).message
    np.save(tmp_path / "big.npy", np.full((10, 2), 300, np.int32))
    error_of(tmp_path, "big.npy", [TensorSpec("ids", (1, 2), "int8")])


def test_missing_input_names_and_unequal_counts(tmp_path):
    specs = [TensorSpec("a", (1, 4)), TensorSpec("b", (1, 4))]
    np.savez(tmp_path / "d.npz", a=rand(9, 4), c=rand(9, 4))
    assert "['b']" in error_of(tmp_path, "d.npz", specs).message
    np.savez(tmp_path / "e.npz", a=rand(9, 4), b=rand(10, 4))
    assert "different sample counts" in error_of(tmp_path, "e.npz", specs).message


def test_pickles_are_never_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    assert "pickled" in error_of(tmp_path, "obj.npy").hint
    (tmp_path / "evil.npy").write_bytes(pickle.dumps({"image": 1}))
    assert "pickle" in error_of(tmp_path, "evil.npy").message
    np.savez(tmp_path / "obj.npz", image=np.array([None] * 10, dtype=object))
    error_of(tmp_path, "obj.npz")


@pytest.mark.parametrize("content, said", [(b"hello, not numpy at all", "not a NumPy file"), (b"", "empty")])
def test_garbage_is_not_called_a_pickle(tmp_path, content, said):
    (tmp_path / "junk.npy").write_bytes(content)
    err = error_of(tmp_path, "junk.npy")
    assert said in err.message and "pickle" not in (err.message + err.hint).lower(), (err.message, err.hint)


def test_bad_files(tmp_path):
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY\x01\x00")
    error_of(tmp_path, "trunc.npy")
    (tmp_path / "data.csv").write_text("1,2")
    error_of(tmp_path, "data.csv")
    error_of(tmp_path, "missing.npz")
    np.save(tmp_path / "x.npy", rand(10, 4))
    assert "a .npz" in error_of(tmp_path, "x.npy", [TensorSpec("a", (1, 4)), TensorSpec("b", (1, 4))]).hint


def write_images(folder, count, size=(12, 10)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")
    (folder / "notes.txt").write_text("ignored")


def test_image_folder_with_preprocessing(tmp_path):
    write_images(tmp_path / "imgs", 9)
    spec = PreprocessSpec.parse('{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "crop"}')
    samples = load_dataset(tmp_path / "imgs", IMAGE, preprocess=spec)
    assert len(samples) == 9
    x = samples[1]["image"]           # a PNG: lossless, so we can recompute it exactly
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    assert -2.0 <= x.min() and x.max() <= 2.0
    with Image.open(tmp_path / "imgs" / "img01.png") as image:
        image = image.resize((10, 8), Image.Resampling.BILINEAR).crop((1, 0, 9, 8))
        want = (np.asarray(image, np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), want, atol=1e-5)


def test_image_folder_nhwc_bgr_and_bad_image(tmp_path):
    write_images(tmp_path / "imgs", 8)
    nhwc = [TensorSpec("image", (1, 6, 5, 3))]
    rgb = load_dataset(tmp_path / "imgs", nhwc, preprocess="scale = 1.0")
    bgr = load_dataset(tmp_path / "imgs", nhwc, preprocess='channels = "BGR"\nscale = 1.0')
    assert rgb[0]["image"].shape == (1, 6, 5, 3)
    np.testing.assert_array_equal(rgb[0]["image"][..., ::-1], bgr[0]["image"])
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    assert "broken.png" in error_of(tmp_path, "imgs", nhwc).message


def test_preprocess_spec_parsing(tmp_path):
    (tmp_path / "p.toml").write_text('size = [4, 4]\nmean = 0.5\nlayout = "NHWC"\n')
    spec = PreprocessSpec.parse(str(tmp_path / "p.toml"))
    assert spec.size == (4, 4) and spec.mean == (0.5,) and spec.layout == "NHWC"
    assert PreprocessSpec.parse(spec.to_dict()) == spec
    for bad in (str(tmp_path / "missing.toml"), '{"channels": "CMYK"}', '{"colour": "red"}', "std = [0, 1, 1]", "{not json", "layout = 3x",
                'mean = ["a"]', "size = 3", 'scale = "x"'):
        with pytest.raises(UsageError):
            PreprocessSpec.parse(bad)


def test_input_specs_from_onnx(digits_dir):
    import onnx
    specs = input_specs(onnx.load(str(digits_dir / "digits_cnn.onnx")))
    assert specs == [TensorSpec("input", (1, 1, 8, 8), "float32")]
    assert len(load_dataset(digits_dir / "calib.npz", specs, limit=50)) == 50


def test_dynamic_batch_dim_splits_into_batch_one_samples(tmp_path):
    np.save(tmp_path / "x.npy", rand(12, 5))
    samples = load_dataset(tmp_path / "x.npy", [TensorSpec("x", (None, 5))])
    assert len(samples) == 12 and samples[0]["x"].shape == (1, 5)


def test_image_channels_must_match_the_input(tmp_path):
    write_images(tmp_path / "imgs", 8)
    gray = [TensorSpec("image", (1, 1, 8, 8))]
    err = error_of(tmp_path, "imgs", gray)
    assert "takes 1 channel(s) (NCHW)" in err.message, err.message     # not "8 channel(s) (NHWC)"
    assert '--preprocess \'{"channels": "L", "layout": "NCHW"}\'' in err.hint, err.hint
    samples = load_dataset(tmp_path / "imgs", gray, preprocess='channels = "L"')
    assert samples[0]["image"].shape == (1, 1, 8, 8)


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32", "bool"])
def test_scalar_inputs_are_one_value_per_sample_as_0d_arrays(tmp_path, dtype):
    specs = [TensorSpec("x", (1, 4)), TensorSpec("sr", (), dtype)]
    np.savez(tmp_path / "d.npz", x=rand(9, 1, 4), sr=np.arange(9).astype(dtype))
    samples = load_dataset(tmp_path / "d.npz", specs)
    assert all(isinstance(s["sr"], np.ndarray) and s["sr"].shape == () and s["sr"].dtype == dtype for s in samples)
    assert samples[3]["sr"] == np.asarray(3).astype(dtype)


def test_missing_input_hint_lists_the_file_and_the_model(tmp_path):
    specs = [TensorSpec("x", (1, 4)), TensorSpec("state", (1, 8))]
    np.savez(tmp_path / "d.npz", x=rand(9, 1, 4), h=rand(9, 1, 8))
    error = error_of(tmp_path, "d.npz", specs)
    assert "['state']" in error.message
    assert "['x', 'state']" in error.hint and "['x', 'h']" in error.hint and "--state" in error.hint
