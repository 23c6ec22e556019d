"""``--input-value NAME=VALUE``: freeze a graph input to a constant before conversion.

Some inputs are configuration, not data: the sample rate of a voice-activity detector (an int64
scalar that the graph only compares in an ``If``), a fixed sequence length, a mode flag. Frozen,
the input becomes an initializer, so shape inference and constant folding see its value (an
``If`` on it folds to one branch) and the converted model no longer takes it. The frozen values
are recorded in the manifest (``frozen_inputs``), and ``ganglion verify`` freezes the float
reference the same way from there, so both models see the same graph.

    parse_value("sr=16000") -> ("sr", (16000,))            parse_value("gain=0.5,0.5") -> 2 values
    freeze_inputs(model, {"sr": (16000,)}, shapes=None) -> a copy without input "sr"

A value is one number (filled to the input's shape) or one number per element. The input's shape
must be static, or pinned with ``--input-shape`` (the same flag ``convert`` takes).

Found, not asked: ``constant_controls(model, calib)`` returns the inputs that only steer control
flow (``frontend.control_inputs``) and hold one value in every calibration sample; ``convert``
freezes them as if given with ``--input-value``, says so (``FrozenInputWarning``) and lists them
in the manifest (``frozen_inputs`` and ``frozen_inputs_found``). The model then converts for that
value only, which is what the calibration data shows it is used with.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.calibrate.data import input_specs, load_dataset
from converters.errors import CalibrationDataError
from converters.frontend.control_inputs import control_inputs
from core.errors import UsageError

HINT = "write NAME=VALUE (one number, or comma-separated numbers, one per element), e.g. --input-value sr=16000"


def parse_value(text: str) -> tuple[str, tuple[float, ...]]:
    """'sr=16000' -> ('sr', (16000,)); numbers may be ints, floats, true/false."""
    name, sep, values = text.rpartition("=")
    try:
        numbers = tuple(_number(v) for v in values.split(",")) if sep and values.strip() else ()
    except ValueError:
        numbers = ()
    if not name or not numbers:
        raise UsageError(f"cannot read input value {text!r}", where="--input-value", hint=HINT)
    return name, numbers


class FrozenInputWarning(UserWarning):
    """An input frozen without --input-value: it only steers control flow and the calibration data
    holds one value for it."""


def constant_controls(model: onnx.ModelProto, calib) -> dict[str, tuple[float, ...]]:
    """{input: its one value} for the control inputs that ``calib`` (a .npz naming them) holds
    constant across samples; {} without such inputs or data (the If stays, and is refused)."""
    specs = [s for s in input_specs(model) if s.name in set(control_inputs(model))]
    if not specs or calib is None or not str(calib).lower().endswith(".npz"):
        return {}
    try:
        samples = load_dataset(calib, specs, min_samples=1)
    except CalibrationDataError:         # data without these arrays: nothing found (loading reports it)
        return {}
    found = {}
    for spec in specs:
        values = np.stack([s[spec.name] for s in samples])
        if np.all(values == values[:1]):
            found[spec.name] = tuple(v.item() for v in values[0].reshape(-1))
    return found


def _number(text: str) -> int | float:
    text = text.strip().lower()
    if text in ("true", "false"):
        return int(text == "true")
    try:
        return int(text)            # kept an int: the manifest records 16000, not 16000.0
    except ValueError:
        return float(text)


def freeze_inputs(model: onnx.ModelProto, values: Mapping[str, Sequence[float]],
                  shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs named in ``values`` are initializers holding them.

    Every problem (unknown name, dynamic shape without ``shapes``, wrong count) is collected and
    raised once as a UsageError."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    problems, arrays = [], {}
    for name, numbers in values.items():
        if name not in inputs:
            problems.append(f"{name!r} is not a model input (inputs: {', '.join(inputs)})")
            continue
        array, problem = _array(inputs[name], numbers, (shapes or {}).get(name))
        if problem:
            problems.append(problem)
        else:
            arrays[name] = array
    if problems:
        raise UsageError("--input-value: " + "; ".join(problems), where="--input-value", hint=HINT)
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [vi for vi in frozen.graph.input if vi.name not in arrays]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    frozen.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in arrays.items())
    return frozen


def _array(vi: onnx.ValueInfoProto, numbers: Sequence[float], pinned) -> tuple[np.ndarray | None, str | None]:
    """The value for input ``vi`` as an array of its dtype and shape, or (None, the problem)."""
    tensor = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    shape = list(pinned) if pinned is not None else dims
    if None in shape:
        return None, (f"input {vi.name!r} has a dynamic shape {['?' if d is None else d for d in dims]}; "
                      f"pin it with --input-shape {vi.name}=...")
    count = int(np.prod(shape, dtype=np.int64))
    if len(numbers) not in (1, count):
        return None, f"input {vi.name!r} holds {count} value(s) {shape}, got {len(numbers)}"
    array = np.broadcast_to(np.asarray(numbers, np.float64), (count,)) if len(numbers) == 1 else np.asarray(numbers)
    if dtype.kind in "iub" and not np.all(np.equal(np.round(array), array)):
        return None, f"input {vi.name!r} is {dtype}, got non-integer value(s) {list(numbers)}"
    return np.ascontiguousarray(array.astype(dtype).reshape(shape)), None
