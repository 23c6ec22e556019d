"""Load calibration / holdout data into per-sample feed dicts shaped exactly like the model inputs.

Accepted sources:

    .npy           one input only: a single sample (the input's shape), a stack [N, *shape],
                   or, when the batch dim is 1, a stack of unbatched samples [N, *shape[1:]]
    .npz           one array per input name, first axis = samples (same shape rules per input);
                   a 0-d input (a sample rate) is one value per sample, shape [N]; integer and
                   bool inputs (token ids, flags) keep their dtype. A streaming model's state
                   inputs may be left out: calibrate.stream feeds them from the model's outputs
    image folder   JPEG/PNG files (sorted, recursive) for a single image input, decoded and
                   preprocessed by a PreprocessSpec (converters.calibrate.preprocess)

Everything is checked before use and reported as a CalibrationDataError naming the file, the
input, what was expected and what was found: wrong shape, unsafe dtype, too few samples,
NaN/Inf, missing input names, pickled objects (never loaded: np.load(allow_pickle=False)).
Safe casts are applied with a CalibrationCastWarning that says so (float64 -> float32, or
integer data into a float input, which often means unnormalised pixels).
"""
from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.calibrate.preprocess import CHANNELS, PreprocessSpec
from converters.calibrate.samples import (ArrayColumn, FileColumn, ImageColumn, Samples, layout_of,
                                         read_header)
from converters.errors import CalibrationDataError

# Calibration ranges from fewer samples overfit them: percentile/entropy histograms need enough
# values and one or two images rarely show an activation's real spread. 8 is a floor, not a
# recommendation (100-500 representative samples is typical); verify passes min_samples=1.
MIN_SAMPLES = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
               9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


class CalibrationCastWarning(UserWarning):
    """Data was cast to the model input's dtype (the cast was safe, but worth knowing about)."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input as the data loader sees it. ``None`` in ``shape`` matches any size."""
    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def matches(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def input_specs(model) -> list[TensorSpec]:
    """TensorSpecs of an onnx.ModelProto's real inputs (initializers excluded)."""
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tensor = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tensor.shape.dim)
        specs.append(TensorSpec(vi.name, shape, ONNX_DTYPES.get(tensor.elem_type, "float32")))
    return specs


def shapes_from_data(path, inputs: list[TensorSpec], given=()) -> dict[str, tuple[int, ...]]:
    """{input: shape} for the inputs with a dynamic dim past the batch axis (not in ``given``) that
    the .npz/.npy at ``path`` fixes: a stack [N, *shape] whose every sample has one shape (recorded
    audio frames of 512 values for silero VAD's ``input`` [batch, sequence]). An array of the
    input's own rank is a stack of batch-1 samples (``samples.layout_of``). Image folders and arrays
    that do not fit are left alone (loading reports them)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".npz", ".npy"):
        return {}
    found = {}
    for spec in inputs:
        if spec.name in given or None not in spec.shape[1:]:
            continue
        member = None if path.suffix.lower() == ".npy" else spec.name
        if member is None and len(inputs) != 1:
            continue
        try:
            shape = tuple(read_header(path, member)[0])
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
            continue
        sample = shape[1:] if len(shape) == len(spec.shape) + 1 else None
        if len(shape) == len(spec.shape):
            sample = shape if spec.shape[0] is not None else (1, *shape[1:])
        if sample is not None and 0 not in sample and spec.matches(sample):
            found[spec.name] = sample
    return found


def load_dataset(path, inputs: list[TensorSpec], *, preprocess=None, limit: int | None = None,
                 min_samples: int = MIN_SAMPLES) -> Samples:
    """The samples of ``path`` as a lazy ``Samples`` sequence of ``{input name: array shaped and
    typed like the input}``: every sample is read (and checked) once here, then again from the
    source on each pass, never all held at once (calibrate/samples.py)."""
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"calibration data not found: {path}", where=str(path),
                                   hint="pass a .npy, a .npz or a folder of JPEG/PNG images")
    if path.is_dir():
        samples = _load_images(path, inputs, PreprocessSpec.parse(preprocess), limit)
    elif path.suffix.lower() == ".npy":
        samples = _load_npy(path, inputs)
    elif path.suffix.lower() == ".npz":
        samples = _load_npz(path, inputs)
    else:
        raise CalibrationDataError(f"unsupported calibration data file {path.name!r}", where=str(path),
                                   hint="use .npy (one input), .npz (one array per input) or an image folder")
    if limit is not None:
        samples = samples[:limit]
    if len(samples) < min_samples:
        raise CalibrationDataError(
            f"too few samples: expected at least {min_samples}, got {len(samples)}", where=str(path),
            hint=f"calibration needs >= {min_samples} representative samples (100-500 is typical); "
                 "ranges from fewer overfit them" + (f" (--num-calib is {limit})" if limit else ""))
    _check_values(samples, path)
    return samples


def array_names(path) -> set[str] | None:
    """Names of the arrays a .npz holds (which inputs the data feeds); None for other sources
    (a .npy or an image folder feeds one input, named by the model)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    with _load_array(path) as archive:
        return set(archive.files)


def _load_array(path: Path):
    kind = _numpy_kind(path)
    if kind != "numpy":
        raise CalibrationDataError(
            f"cannot read {path.name}: {kind}", where=str(path),
            hint="save plain numeric arrays (np.save / np.savez); pickled objects are never loaded"
            if kind.startswith("a pickle") else "save the samples with np.save (.npy) or np.savez (.npz)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        pickled = "pickle" in str(exc).lower()      # an object array inside a real .npy/.npz
        raise CalibrationDataError(
            f"cannot read {path.name}: " + ("it holds Python objects, not numbers" if pickled else str(exc)),
            where=str(path), hint="save plain numeric arrays (np.save / np.savez); pickled objects are never "
                                  "loaded" if pickled else "the file is corrupt or not a NumPy file") from None
    except (OSError, EOFError) as exc:
        raise CalibrationDataError(f"cannot read {path.name}: {exc}", where=str(path),
                                   hint="the file is truncated or not a NumPy file") from None


def _numpy_kind(path: Path) -> str:
    """"numpy" for a .npy/.npz header, else what the file is instead (np.load would call any other
    file "pickled data" and suggest allow_pickle, which is never the fix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        return f"it cannot be opened ({exc.strerror})"
    if head.startswith((b"\x93NUMPY", b"PK")):
        return "numpy"
    if head[:1] == b"\x80":
        return "a pickle file, not a NumPy array file"
    return "not a NumPy file (no .npy or .npz header)" if head else "the file is empty"


def _load_npy(path: Path, inputs: list[TensorSpec]) -> Samples:
    if len(inputs) != 1:
        raise CalibrationDataError(
            f"a .npy file holds one array but the model has {len(inputs)} inputs "
            f"({[s.name for s in inputs]})", where=str(path),
            hint="use a .npz with one array per input name: np.savez(f, **{name: array}); a recurrent "
                 "state input is fed from its output instead (--state OUTPUT=INPUT)")
    _load_array(path)               # the file-kind checks (a pickle, not NumPy, empty) and their messages
    return Samples({inputs[0].name: _column(path, None, inputs[0])})


def _load_npz(path: Path, inputs: list[TensorSpec]) -> Samples:
    with _load_array(path) as archive:
        files = archive.files
    missing = [s.name for s in inputs if s.name not in files]
    if missing:
        raise CalibrationDataError(
            f"{path.name} has no array for input(s) {missing}", where=str(path),
            hint=f"the arrays must be named after the model inputs {[s.name for s in inputs]}; "
                 f"the file has {files} (a recurrent state input is fed from its output: "
                 "--state OUTPUT=INPUT)")
    columns = {spec.name: _column(path, spec.name, spec) for spec in inputs}
    counts = {name: col.count for name, col in columns.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationDataError(f"inputs have different sample counts {counts}", where=str(path),
                                   hint="every array's first axis counts samples; they must agree")
    return Samples(columns)


def _column(path: Path, member: str | None, spec: TensorSpec):
    """The column of ``spec`` stored in ``path`` (``member`` of a .npz): read lazily, cast as the
    input wants (a cast that cannot be safe fails now, a safe one warns now)."""
    where = f"array {member!r} of {path.name}" if member else path.name
    try:
        shape, dtype, fortran = read_header(path, member)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError(f"cannot read {where}: {exc}", where=str(path),
                                   hint="the file is truncated or not a NumPy file") from None
    if dtype.hasobject:
        raise CalibrationDataError(f"cannot read {where}: it holds Python objects, not numbers", where=str(path),
                                   hint="save plain numeric arrays (np.save / np.savez); pickled objects are "
                                        "never loaded")
    layout = layout_of(tuple(shape), spec, path)
    convert = _caster(dtype, spec, path)
    if fortran:                     # rows are not contiguous on disk: read the array whole (rare)
        loaded = _load_array(path)
        if member is None:
            return ArrayColumn(loaded, layout, convert)
        with loaded:
            return ArrayColumn(loaded[member], layout, convert)
    return FileColumn(path, member, (tuple(shape), dtype), layout, convert)


def split_samples(array: np.ndarray, spec: TensorSpec, path: Path) -> list[np.ndarray]:
    """Cut an in-memory array into samples shaped like ``spec``, cast and checked."""
    column = ArrayColumn(array, layout_of(tuple(array.shape), spec, path), _caster(array.dtype, spec, path))
    samples = Samples({spec.name: column})
    _check_values(samples, path)
    # np.asarray: a 0-d input's samples must stay arrays (numpy scalars are refused by onnxruntime)
    return [np.asarray(s[spec.name]) for s in samples]


def _check_values(samples: Samples, path: Path) -> None:
    """Read every sample of the stored columns once: NaN/Inf and unsafe integer casts fail here,
    before calibration (images are decoded from 8-bit pixels, always finite: not decoded twice)."""
    for name, column in samples.columns.items():
        if isinstance(column, ImageColumn):
            continue
        bad = []
        for index, row in enumerate(column.rows(samples.start, samples.stop)):
            if row.dtype.kind == "f" and not np.isfinite(row).all():
                bad.append(index)
        if bad:
            raise CalibrationDataError(
                f"input {name!r}: {len(bad)} sample(s) hold NaN or Inf (first: sample {bad[0]})",
                where=str(path), hint="clean or drop those samples; calibration needs finite values")


def _caster(got: np.dtype, spec: TensorSpec, path: Path):
    """``convert(row, index)`` casting a sample to the input's dtype; warns now about a cast worth
    knowing, raises now when none is safe (integer narrowing is checked on each row's values)."""
    want = np.dtype(spec.dtype)
    got = np.dtype(got)
    if got == want:
        return lambda row, index: row
    if want.kind == "f" and got.kind in "fiub":
        if got.kind != "f":
            _warn(f"input {spec.name!r}: {got} data cast to {want}; if these are raw pixels, "
                  "they are not normalised (use an image folder with a preprocessing spec)", path)
        elif got.itemsize > want.itemsize:
            _warn(f"input {spec.name!r}: {got} data cast to {want} (precision beyond {want} is dropped)", path)
        return lambda row, index: row.astype(want)
    unsafe = CalibrationDataError(
        f"input {spec.name!r}: expected dtype {want}, got {got}, which does not cast safely",
        where=str(path), hint=f"save the data as {want}")
    if want.kind in "iu" and got.kind in "iub":
        info = np.iinfo(want)

        def narrow(row: np.ndarray, index: int) -> np.ndarray:
            if row.size and (row.min() < info.min or row.max() > info.max):
                raise unsafe
            return row.astype(want)
        return narrow
    raise unsafe


def _warn(message: str, path: Path) -> None:
    warnings.warn(f"{path.name}: {message}", CalibrationCastWarning, stacklevel=4)


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _check_channels(target: TensorSpec, spec: PreprocessSpec, folder: Path) -> None:
    """Catch an RGB spec for a grayscale model (and the like) before decoding anything, and say
    which --preprocess spec would fit the input's shape."""
    shape = tuple(1 if d is None else d for d in target.shape)
    layout = spec.resolve_layout(shape)
    have = shape[1] if layout == "NCHW" else shape[3]
    want = CHANNELS[spec.channels]
    if have == want:
        return
    # Read the layout off the shape: the channel axis is the small one (1 gray, 3 colour, 4 RGBA).
    guess = "NCHW" if shape[1] in (1, 3) else "NHWC" if shape[3] in (1, 3) else None
    hint = 'set "channels" to "L" for 1 channel or "RGB"/"BGR" for 3, and "layout" if needed'
    if guess:
        count = shape[1] if guess == "NCHW" else shape[3]
        suggested = {"channels": "L" if count == 1 else "RGB", "layout": guess}
        hint = f"--preprocess '{json.dumps(suggested)}' (add mean/std/scale as the model was trained)"
        layout, have = guess, count
    raise CalibrationDataError(
        f"input {target.name!r} {_fmt(target.shape)} takes {have} channel(s) ({layout}), but the "
        f"preprocessing makes {want} (channels={spec.channels!r})", where=str(folder), hint=hint)


def _load_images(folder: Path, inputs: list[TensorSpec], spec: PreprocessSpec,
                 limit: int | None) -> Samples:
    """One sample per image file, decoded when a pass reaches it; every file's header is read now,
    so a file that is no image fails before calibration."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CalibrationDataError(
            "an image folder feeds exactly one rank-4 image input; the model has "
            f"{[(s.name, _fmt(s.shape)) for s in inputs]}", where=str(folder),
            hint="for other models, save the samples as .npz (one array per input)")
    from PIL import Image, UnidentifiedImageError     # optional: only image folders need Pillow
    target = inputs[0]
    _check_channels(target, spec, folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    shape = tuple(1 if d is None else d for d in target.shape)

    def decode(file: Path, index: int, check_only: bool = False) -> np.ndarray:
        try:
            with Image.open(file) as image:
                return image if check_only else split_samples(spec.apply(image, shape), target, file)[0]
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise CalibrationDataError(f"cannot decode image {file.name}: {exc}", where=str(file),
                                       hint="remove or re-save the file as JPEG/PNG") from None

    for index, file in enumerate(files):
        decode(file, index, check_only=True)
    return Samples({target.name: ImageColumn(files, decode)})
