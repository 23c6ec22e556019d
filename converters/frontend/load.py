"""Load an ONNX file safely: parse, refuse unsafe external data, check, and gate the opset.

External data is checked *before* any of it is read: a location must be relative, must not
contain '..', and must resolve (after following symlinks) inside the model's own folder. A model
that names ``/etc/passwd`` or ``../../secret`` as its weights is refused with ModelLoadError.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import version_converter
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from converters.errors import ModelLoadError

OPSET_MIN, OPSET_MAX = 11, 21
UPGRADE_FROM = 7    # opsets 7-10 (ONNX's model zoo) are raised to OPSET_MIN; before 7 ops had legacy
                    # broadcast/consumed_inputs attributes: re-export rather than trust an adapter chain
REEXPORT_HINT = "re-export with torch.onnx.export(..., opset_version=17) or onnx.version_converter"


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse ``path`` (no external data yet), check external-data locations, then load them."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}", where=str(path),
                             hint="pass the path of an .onnx file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError/RuntimeWarning-ish types; map them all
        raise ModelLoadError(f"cannot parse ONNX protobuf: {exc}", where=str(path),
                             hint="the file is corrupt or truncated; export it again") from exc
    if not model.graph.node:
        raise ModelLoadError("the model has no graph nodes (empty or truncated file)",
                             where=str(path), hint="the file is corrupt or truncated; export it again")
    base = path.resolve().parent
    for tensor in _external_tensors(model):
        _check_location(tensor, base, path)
    if any(True for _ in _external_tensors(model)):
        try:
            onnx.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise ModelLoadError(f"cannot read external data: {exc}", where=str(path),
                                 hint="keep the weight files next to the .onnx file") from exc
    return model


def _external_tensors(model: onnx.ModelProto):
    for tensor in _all_tensors(model.graph):
        if uses_external_data(tensor):
            yield tensor


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _check_location(tensor: onnx.TensorProto, base: Path, model_path: Path) -> None:
    location = ExternalDataInfo(tensor).location
    where = f"{model_path}: initializer '{tensor.name}' -> '{location}'"
    hint = "external data must be a relative path inside the model's folder"
    if not location:
        raise ModelLoadError("external data without a location", where=where, hint=hint)
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise ModelLoadError("external data location is absolute", where=where, hint=hint)
    parts = Path(location.replace("\\", "/")).parts
    if ".." in parts:
        raise ModelLoadError("external data location leaves the model's folder ('..')",
                             where=where, hint=hint)
    resolved = (base / location).resolve()
    if resolved != base and base not in resolved.parents:
        raise ModelLoadError("external data location escapes the model's folder (symlink)",
                             where=where, hint=hint)
    if not resolved.is_file():
        raise ModelLoadError("external data file is missing", where=where,
                             hint="copy the weight file next to the .onnx file")


def default_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset, gated to the supported window."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelLoadError("the model imports no default-domain opset",
                             hint=REEXPORT_HINT)
    opset = max(versions)
    if not OPSET_MIN <= opset <= OPSET_MAX:
        raise ModelLoadError(f"opset {opset} is not supported (supported: {OPSET_MIN}-{OPSET_MAX})",
                             code="convert.opset", where="model.opset_import",
                             hint=REEXPORT_HINT)
    return opset


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """A model at opset 7-10 raised to ``OPSET_MIN`` by ``onnx.version_converter``; others unchanged.

    The adapters are ONNX's own, one per op change (e.g. Dropout loses ``is_test``, Upsample
    becomes Resize), so the upgraded model computes what the original did; ``default_opset``
    still refuses what stays outside the window.
    """
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions or not UPGRADE_FROM <= max(versions) < OPSET_MIN:
        return model
    try:
        return version_converter.convert_version(model, OPSET_MIN)
    except Exception as exc:  # the converter raises assorted internal errors
        raise ModelLoadError(f"cannot raise opset {max(versions)} to {OPSET_MIN}: {exc}",
                             code="convert.opset", where="model.opset_import",
                             hint=REEXPORT_HINT) from exc


def raise_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` at default-domain opset ``version`` or later: a copy converted by ONNX's adapters
    when it is older, so attribute forms that moved to inputs (Squeeze/Unsqueeze/Split ``axes`` at
    13) move too; writing the new number alone leaves a model onnxruntime refuses."""
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=version)
    if current >= version:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return version_converter.convert_version(model, version)
    except Exception as exc:  # the converter raises assorted internal errors
        raise ModelLoadError(f"cannot raise opset {current} to {version}: {exc}", code="convert.opset",
                             where="model.opset_import", hint=REEXPORT_HINT) from exc


def check(model: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, Exception) as exc:
        raise ModelLoadError(f"the ONNX checker rejected the model: {str(exc).splitlines()[0]}",
                             where=where, hint="fix the exporter output; run onnx.checker yourself "
                                               "for the full message") from exc
