"""Lazy, re-iterable calibration samples: one sample in memory at a time, read again on each pass.

A conversion walks its calibration data several times (ranges in onnxruntime, the TFLite range and
bias-correction pass, the QDQ bias correction, verify), and a detector's 100 samples at 640x640 are
~500 MB: holding them in a list was most of a conversion's peak memory. ``Samples`` is a
``Sequence`` of feed dicts whose iteration reads each sample from its source when it is reached:

    FileColumn    an array of a .npy file or of a .npz member, read row by row from its offset
                  (a stored .npz member seeks; a compressed one decompresses as it goes)
    ImageColumn   one JPEG/PNG per sample, decoded and preprocessed when it is reached
    ArrayColumn   an array already in memory (Fortran-ordered files, small data)

``len()`` and indexing work as on a list (``samples[:8]`` is another lazy view), so callers need
no change; what they must not do is keep every sample they iterate over.

``Spill`` is the same idea for arrays the conversion makes itself and reads again later (``auto``'s
reference outputs of its scoring samples, 90 MB on a 640x640 detector): written to a temporary
file as they come, read back one sample's at a time.
"""
from __future__ import annotations

import io
import tempfile
import weakref
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import CalibrationDataError


@dataclass(frozen=True)
class Layout:
    """How a stored array splits into samples: ``rows`` when its first axis counts samples (else
    the whole array is one sample), each sample then reshaped to ``shape``."""
    rows: bool
    shape: tuple[int, ...]


def layout_of(shape: tuple[int, ...], spec, path: Path) -> Layout:
    """The split of an array of ``shape`` into samples of ``spec`` (a data.TensorSpec): a stack
    [N, *shape], one sample, or unbatched samples of a batch-1 input; else a CalibrationDataError."""
    if spec.shape and spec.shape[0] is None and spec.matches(shape):
        return Layout(True, (1, *shape[1:]))     # dynamic batch: the first axis counts batch-1 samples
    if spec.matches(shape):
        return Layout(False, shape)
    if spec.matches(shape[1:]):
        return Layout(True, shape[1:])
    if len(spec.shape) >= 1 and spec.shape[0] == 1 and spec.matches((1, *shape[1:])):
        return Layout(True, (1, *shape[1:]))
    dims = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
    raise CalibrationDataError(
        f"input {spec.name!r}: expected shape {dims} or a stack [N, ...] of it, got {list(shape)}",
        where=str(path), hint="the first axis counts samples; the rest must match the model input")


class ArrayColumn:
    """Samples of an in-memory array; ``convert(row, index)`` casts and checks one sample."""

    def __init__(self, array: np.ndarray, layout: Layout, convert):
        self.array, self.layout, self.convert = array, layout, convert
        self.count = len(array) if layout.rows else 1

    def rows(self, start: int, stop: int) -> Iterator[np.ndarray]:
        for i in range(start, stop):
            row = self.array[i] if self.layout.rows else self.array
            yield self.convert(np.asarray(row).reshape(self.layout.shape), i)


class FileColumn:
    """Samples of an array stored in ``path`` (a .npy) or in member ``member`` of a .npz, read one
    row at a time from the file; ``header`` is (shape, dtype) as ``read_header`` found them."""

    def __init__(self, path: Path, member: str | None, header, layout: Layout, convert):
        self.path, self.member, self.layout, self.convert = path, member, layout, convert
        self.shape, self.dtype = header
        self.count = self.shape[0] if layout.rows else 1
        self.row_bytes = int(np.prod(self.shape[1:] if layout.rows else self.shape)) * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> Iterator[np.ndarray]:
        with _open(self.path, self.member) as f:
            _skip_header(f)
            if start:
                f.seek(start * self.row_bytes, io.SEEK_CUR)
            for i in range(start, stop):
                row = np.empty(self.layout.shape, self.dtype)
                if f.readinto(memoryview(row).cast("B")) != self.row_bytes:
                    raise CalibrationDataError(f"{self.path.name} ends before sample {i}", where=str(self.path),
                                               hint="the file is truncated; save it again")
                yield self.convert(row, i)


def _open(path: Path, member: str | None):
    if member is None:
        return open(path, "rb")
    archive = zipfile.ZipFile(path)
    try:
        return _ClosingMember(archive, archive.open(member + ".npy"))
    except BaseException:
        archive.close()
        raise


class _ClosingMember(io.BufferedReader):
    """A .npz member stream that closes its archive with it."""

    def __init__(self, archive: zipfile.ZipFile, stream):
        super().__init__(stream, buffer_size=1 << 20)
        self.archive = archive

    def close(self) -> None:
        super().close()
        self.archive.close()


def _skip_header(f) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) from the .npy header at ``f``, which is left at the data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return shape, dtype, fortran


def read_header(path: Path, member: str | None) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of a .npy file or .npz member, read without its data."""
    with _open(path, member) as f:
        return _skip_header(f)


class ImageColumn:
    """One sample per image file, decoded by ``decode(file, index)`` when it is reached."""

    def __init__(self, files: list[Path], decode):
        self.files, self.decode = files, decode
        self.count = len(files)

    def rows(self, start: int, stop: int) -> Iterator[np.ndarray]:
        for i in range(start, stop):
            yield self.decode(self.files[i], i)


class Samples(Sequence):
    """Feed dicts ``{input name: array}`` over columns of equal length, read lazily (module doc)."""

    def __init__(self, columns: dict, start: int = 0, stop: int | None = None):
        self.columns = columns
        count = min((c.count for c in columns.values()), default=0)
        self.start, self.stop = start, count if stop is None else min(stop, count)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        readers = {name: col.rows(self.start, self.stop) for name, col in self.columns.items()}
        try:
            for _ in range(len(self)):
                yield {name: next(reader) for name, reader in readers.items()}
        finally:
            for reader in readers.values():
                reader.close()

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return Samples(self.columns, self.start + start, self.start + max(stop, start))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(iter(self[index:index + 1]))


class Spill(Sequence):
    """Lists of arrays, one per sample, kept in an anonymous temporary file instead of memory:
    ``append`` writes one sample's, indexing and iteration read one sample's back."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.close = weakref.finalize(self, self.file.close)     # closed when dropped, or by close()
        self.entries: list[list[tuple[int, np.dtype, tuple]]] = []
        self.end = 0

    def append(self, arrays) -> None:
        entry = []
        for array in arrays:
            array = np.asarray(array, order="C")         # (ascontiguousarray makes a 0-d array 1-d)
            self.file.seek(self.end)
            self.file.write(memoryview(array.reshape(-1)).cast("B"))
            entry.append((self.end, array.dtype, array.shape))
            self.end += array.nbytes
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        found = []
        for offset, dtype, shape in self.entries[index]:
            array = np.empty(shape, dtype)
            self.file.seek(offset)
            if array.nbytes and self.file.readinto(memoryview(array.reshape(-1)).cast("B")) != array.nbytes:
                raise OSError(f"the temporary file of spilled arrays is short at sample {index}")
            found.append(array)
        return found
