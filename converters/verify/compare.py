"""verify(): run a candidate (int8 TFLite, QDQ ONNX, or a .gpk holding either) and the float ONNX
reference over the same samples, and build a VerifyReport.

The candidate runs in the real runtime it ships for: LiteRT for .tflite (through
core.litert.make_interpreter), onnxruntime for QDQ .onnx. The reference always runs in
onnxruntime. Per-layer comparison of a TFLite candidate needs its tensor_map (from the artifact
manifest, or passed in); a QDQ candidate is matched by tensor name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from converters.errors import CalibrationDataError, ModelLoadError
from converters.progress import bar
from converters.verify import per_layer as layers
from converters.verify.classes import output_axes
from converters.verify.metrics import Accumulator, accuracy
from converters.verify.report import VerifyReport
from converters.verify.runners import OnnxRunner, TFLiteRunner, VerifyInputError, align
from core import artifact
from core.artifact import refuse_unsigned
from core.errors import UsageError


def open_candidate(candidate, *, fmt: str | None = None, trusted_keys=None) -> tuple[str, bytes, dict | None]:
    """(format "tflite"|"onnx", model bytes, manifest or None) from a path or bytes."""
    where = None
    if isinstance(candidate, (bytes, bytearray)):
        data, suffix = bytes(candidate), None
    else:
        path = Path(candidate)
        if not path.is_file():
            raise UsageError(f"candidate model not found: {path}")
        data, suffix, where = path.read_bytes(), path.suffix.lower(), str(path)
    if suffix == ".gpk" or data[:2] == b"PK":
        art = artifact.read(data, trusted_keys=trusted_keys, where=where)
        kinds = [m.get("format") for m in art.manifest.get("models", [])]
        chosen = fmt or ("tflite" if "tflite" in kinds else "onnx")
        return chosen, art.model_bytes(chosen), art.manifest
    if trusted_keys:            # a trusted key means nothing unsigned is trusted (as for `ganglion run`)
        refuse_unsigned(Path(where or "model"), trusted_keys)
    if suffix == ".tflite" or data[4:8] == b"TFL3":
        return "tflite", data, None
    return "onnx", data, None


def verify(candidate, reference, samples: list[dict[str, np.ndarray]], *, fmt: str | None = None,
           labels: np.ndarray | None = None, per_layer: bool = False, tensor_map: dict | None = None,
           trusted_keys=None, progress: bool = True, class_axes: dict | None = None,
           state=()) -> VerifyReport:
    """Compare ``candidate`` with the float ``reference`` (ModelProto or path) on ``samples``.

    Top-1 agreement (and accuracy against ``labels``) is taken only over an output's class axis:
    read from the reference graph (verify/classes.py) or named in ``class_axes`` ({output or "*":
    axis or None}); an output without one reports n/a and the reason in the report's notes.

    ``state``: (output, input) pairs of a streaming model whose ``samples`` are consecutive steps
    (``calibrate.stream.unroll``): the candidate then runs closed-loop, fed its own previous state
    as deployed, so the report includes the drift its int8 state accumulates."""
    kind, data, manifest = open_candidate(candidate, fmt=fmt, trusted_keys=trusted_keys)
    ref_model = reference if isinstance(reference, onnx.ModelProto) else _load_reference(reference)
    if not samples:
        raise VerifyInputError("no samples to verify with", hint="pass holdout data with --data")
    if labels is not None and len(labels) != len(samples):
        raise VerifyInputError(f"{len(labels)} labels for {len(samples)} samples",
                               hint="labels must align one to one with the holdout samples")
    ref_run = OnnxRunner(ref_model)
    cand_run = _candidate_runner(kind, data, ref_run)
    axes = output_axes(ref_model, class_axes)
    for out, inp in state:             # not a detector head, whatever node makes it
        if out in axes and out not in (class_axes or {}):
            axes[out] = (None, f"a recurrent state (fed back as '{inp}'), not class scores")
    first = _labelled_output(axes, ref_run.output_names, labels)
    acc, ref_logits, cand_logits = _run(ref_run, cand_run, samples, axes, first if labels is not None else None,
                                        state, progress)
    report = VerifyReport(candidate=kind, samples=len(samples),
                          outputs={name: {**a.result(), "class_axis": axes[name][0]} for name, a in acc.items()})
    report.notes += [f"top-1 n/a for {name}: {why}" for name, (axis, why) in axes.items() if axis is None]
    if state:
        report.notes.append("streaming: the candidate ran closed-loop over the sequence, fed its own "
                            + ", ".join(f"{o} back as {i}" for o, i in state))
    if labels is not None:
        report.accuracy = {"reference": accuracy(ref_logits, labels),
                           "candidate": accuracy(cand_logits, labels), "labels": int(len(labels)),
                           "output": first}
    if per_layer:
        report.per_layer = _per_layer(kind, data, manifest, tensor_map, ref_model, samples, progress)
    return report


def _run(ref_run, cand_run, samples, axes: dict, first: str | None, state, progress: bool):
    """(accumulator per output, reference and candidate values of output ``first`` (kept only when
    given: labels need them)) over the samples; with ``state`` pairs the candidate is fed its own
    previous state (closed loop)."""
    acc = {name: Accumulator(axes[name][0]) for name in ref_run.output_names}
    ref_logits, cand_logits = [], []
    carried: dict[str, np.ndarray] = {}           # the candidate's own state, from the second step on
    with bar(samples, progress, "verifying") as items:
        for sample in items:
            ref_out, cand_out = ref_run.run(sample), cand_run.run({**sample, **carried})
            carried = {inp: align(cand_out[out], ref_out[out].shape).astype(sample[inp].dtype)
                       for out, inp in state}
            for name in ref_run.output_names:
                acc[name].add(ref_out[name], align(cand_out[name], ref_out[name].shape))
            if first is not None:
                ref_logits.append(ref_out[first])
                cand_logits.append(cand_out[first])
    return acc, ref_logits, cand_logits


def _labelled_output(axes: dict, names: list[str], labels) -> str:
    """The output labels are compared with: the first one with a class axis."""
    with_classes = [n for n in names if axes[n][0] is not None]
    if labels is not None and not with_classes:
        raise VerifyInputError("labels were given, but no output holds class scores: "
                               + "; ".join(f"{n}: {axes[n][1]}" for n in names),
                               hint="name the class axis with --class-axis OUTPUT=AXIS")
    return with_classes[0] if with_classes else names[0]


def _load_reference(path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, onnx's own errors
        raise ModelLoadError(f"cannot read the reference model: {exc}", where=str(path),
                             hint="pass the float .onnx the artifact was converted from") from None


def candidate_onnx(data: bytes) -> onnx.ModelProto:
    """The candidate's bytes as ONNX, or the VerifyInputError saying it is neither format."""
    try:
        return onnx.load_from_string(data)
    except Exception as exc:   # protobuf's DecodeError and friends
        raise VerifyInputError(f"the candidate is neither TFLite nor readable ONNX: {exc}",
                               hint="pass a .tflite, a QDQ .onnx or a .gpk artifact") from exc


def _candidate_runner(kind: str, data: bytes, ref_run: OnnxRunner):
    if kind == "tflite":
        return TFLiteRunner(data, ref_run.input_names, ref_run.output_names)
    run = OnnxRunner(candidate_onnx(data))
    missing = [n for n in ref_run.output_names if n not in run.output_names]
    if missing:
        raise VerifyInputError(f"the candidate ONNX lacks the reference's outputs {missing}",
                               hint="was it converted from this reference model?")
    return run


def _per_layer(kind, data, manifest, tensor_map, ref_model, samples, progress):
    if kind != "tflite":
        return layers.compare_layers_qdq(ref_model, data, samples, progress=progress)
    tensor_map = tensor_map if tensor_map is not None else (manifest or {}).get("tensor_map")
    if not tensor_map:
        raise UsageError("--per-layer needs the tensor_map from the artifact manifest",
                         hint="verify the .gpk written by 'ganglion convert' (a bare .tflite has none)")
    return layers.compare_layers(ref_model, data, tensor_map, samples, progress=progress)


def load_labels(path) -> np.ndarray:
    """Ground-truth class indexes: .npy of integers (no pickle) or text, one integer per line."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            labels = np.load(path, allow_pickle=False)
        else:
            labels = np.array([int(line) for line in path.read_text().split()], dtype=np.int64)
    except (OSError, ValueError) as exc:
        raise CalibrationDataError(f"cannot read labels from {path.name}: {exc}", where=str(path),
                                   hint="labels are integers: a .npy array or one per line in text") from None
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise CalibrationDataError(f"labels must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}",
                                   where=str(path), hint="one class index per holdout sample")
    return labels.astype(np.int64)
