"""Converter errors. Each names what went wrong, where (file, node, tensor) and a hint.

    InputError (core.errors)
    └── ConvertError                    convert.*
        ├── ModelLoadError              corrupt / truncated / invalid ONNX, unsafe external data
        ├── UnsupportedOpsError         every unsupported node of a model, listed at once
        │   └── DataDependentError      output shapes that depend on values (NMS, NonZero, If on data)
        ├── ShapeError                  a dynamic shape that cannot be fixed
        └── CalibrationDataError        wrong shape, dtype, count, NaN/Inf in calibration data
"""
from __future__ import annotations

from core.errors import InputError


class ConvertError(InputError):
    code = "convert"


class ModelLoadError(ConvertError):
    code = "convert.model_load"


class UnsupportedOpsError(ConvertError):
    """Raised once with every problem found, so a user fixes them all in one go."""
    code = "convert.unsupported_op"

    def __init__(self, problems: list[str], *, where: str | None = None, hint: str | None = None):
        self.problems = list(problems)
        message = f"{len(self.problems)} node(s) cannot be converted:\n" + "\n".join(
            f"    - {p}" for p in self.problems)
        super().__init__(message, where=where, hint=hint)


class DataDependentError(UnsupportedOpsError):
    """Nodes whose output shapes depend on input values (detector post-processing, control flow
    on data): TFLite shapes are static. Listed at once, with where to cut the model."""
    code = "convert.data_dependent"


class ShapeError(ConvertError):
    code = "convert.shape"


class CalibrationDataError(ConvertError):
    code = "convert.calibration_data"
