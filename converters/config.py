"""ConvertConfig: every choice a conversion makes, in one frozen, validated dataclass.

The CLI builds one from flags, Python users build one directly, and ``converters.api.convert``
is the only consumer. Validation happens here, once, before any file is read or written, so a
contradictory request (``--io int8`` with ``--quantize none``, ``-o x.tflite`` with
``--target qdq``) fails fast with a UsageError that says which flags clash.

What is written follows the output suffix:

    .gpk      the signed artifact (zip: model file(s) + manifest.json [+ signature])
    .tflite   a bare TFLite flatbuffer (target tflite)
    .onnx     a bare QDQ ONNX model (target qdq)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from core.config import IoType, values
from core.errors import UsageError

TARGETS = ("tflite", "qdq", "both")
QUANTIZE = ("int8", "float16", "dynamic", "none")
IO_TYPES = values(IoType)
LAYOUTS = ("onnx", "nhwc")
OBSERVERS = ("auto", "minmax", "percentile", "magnitude", "entropy", "mse")
QDQ_PROFILES = ("tensorrt", "onnxruntime")           # converters.qdq.PROFILES (not imported: onnx-free)
SUFFIX_TARGET = {".tflite": "tflite", ".onnx": "qdq"}     # bare model files; .gpk holds any target


@dataclass(frozen=True)
class ConvertConfig:
    model: Path
    output: Path
    target: str | None = None             # None: from the output suffix (.onnx -> qdq, else tflite)
    quantize: str = "int8"
    io: str = "float32"                   # artifact I/O type; float32 keeps the ONNX signature
    layout: str = "onnx"                  # "nhwc": channels-last image inputs/outputs
    qdq_profile: str | None = None        # QDQ flavour: "tensorrt" (Jetson, the default) or "onnxruntime"
    observer: str = "auto"                # per tensor group, minmax unless another method wins on held-out samples; "percentile:99.99" passes an argument
    calib: Path | None = None             # .npy / .npz / image folder
    preprocess: str | None = None         # spec for image folders (see converters.calibrate.preprocess)
    num_calib: int | None = 100           # use at most this many calibration samples (None: all)
    holdout: Path | None = None           # data for the fidelity report in the manifest
    holdout_labels: Path | None = None    # ground-truth classes for the holdout (.npy/.txt)
    labels: Path | None = None            # class names, one per line, stored in the manifest
    keep_float: frozenset[str] = frozenset()   # ONNX node names left in float
    auto_keep_float: int = 0              # up to N greedy measured keep-float steps (converters/mixed.py)
    float_head: int = 0                   # keep the first N layers float (converters/tflite/head.py)
    int8_recurrent: bool = False          # LSTM/GRU/RNN in int8 too (default: float, as ORT's quantizer)
    equalize: bool = True                 # outlier channels rescaled into the weights around them (act_equalize.py)
    key: Path | None = None               # ed25519 private key: sign the .gpk manifest
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    input_values: tuple[tuple[str, tuple[float, ...]], ...] = ()   # inputs frozen to constants (freeze.py)
    state: tuple[tuple[str, str], ...] = ()    # (output, input) recurrent state pairs (calibrate/stream.py)
    class_axes: tuple[tuple[str, int | None], ...] = ()   # verify: output ("*": all) -> class axis | None
    outputs: tuple[str, ...] = ()         # cut the model at these tensors first (frontend/cut.py)
    name: str | None = None               # artifact name (default: the model file's stem)
    version: str = "1.0.0"
    progress: bool = True
    extra: dict = field(default_factory=dict, compare=False)   # free-form manifest additions

    def __post_init__(self):
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "keep_float", frozenset(self.keep_float))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if self.target is None:
            object.__setattr__(self, "target", SUFFIX_TARGET.get(self.output.suffix.lower(), "tflite"))
        problems = self.problems()
        if problems:
            message, where, hint = problems[0]
            if len(problems) > 1:        # report every clash at once, like the converter does
                message += "; also: " + "; ".join(p[0] for p in problems[1:])
            raise UsageError(message, where=where, hint=hint)

    # --- derived ----------------------------------------------------------------------------
    @property
    def qdq_flavour(self) -> str:
        """The QDQ profile in effect: the one asked for, else tensorrt (Jetson's int8 path)."""
        return self.qdq_profile or "tensorrt"

    @property
    def output_kind(self) -> str:
        """'gpk', 'tflite' or 'onnx'."""
        return self.output.suffix.lower().lstrip(".")

    @property
    def formats(self) -> tuple[str, ...]:
        """Model formats to build: a subset of ('tflite', 'qdq')."""
        return ("tflite", "qdq") if self.target == "both" else (self.target,)

    @property
    def needs_calibration(self) -> bool:
        """Whether this conversion calibrates: int8, except that a model which carries its own
        int8 parameters (QDQ, QOperator, quantize_dynamic) calibrates only when --calib is given
        (the data then fills what the model leaves unannotated; docs/quantization.md)."""
        return self.quantize == "int8" and (self.calib is not None or not self.model_is_quantized)

    @cached_property
    def model_is_quantized(self) -> bool:
        """The model file holds quantized nodes (read once; False for a file that cannot be read:
        loading it reports why)."""
        from converters.frontend.quantized import file_is_quantized  # optional: onnx (host extra), --help loads none
        return file_is_quantized(self.model)

    @property
    def artifact_name(self) -> str:
        return self.name or self.model.stem

    @property
    def shape_overrides(self) -> dict[str, list[int]]:
        return {name: list(shape) for name, shape in self.input_shapes}

    @property
    def frozen_values(self) -> dict[str, tuple[float, ...]]:
        return dict(self.input_values)

    # --- validation -------------------------------------------------------------------------
    def problems(self) -> list[tuple[str, str, str]]:
        """Every (message, where, hint) wrong with this config; empty when it is usable."""
        out = []

        def bad(message, where, hint):
            out.append((message, where, hint))

        for value, allowed, flag in ((self.target, TARGETS, "--target"), (self.quantize, QUANTIZE, "--quantize"),
                                     (self.io, IO_TYPES, "--io"), (self.layout, LAYOUTS, "--layout"),
                                     (self.observer.split(":")[0], OBSERVERS, "--observer"),
                                     (self.qdq_flavour, QDQ_PROFILES, "--qdq-profile")):
            if value not in allowed:
                bad(f"{flag} {value!r} is not one of {', '.join(allowed)}", flag, f"use {flag} {allowed[0]}")
        if self.qdq_profile is not None and self.target == "tflite":
            bad(f"--qdq-profile {self.qdq_profile} shapes the QDQ ONNX model, but --target tflite writes none",
                "--qdq-profile", "use --target qdq|both (or -o model.onnx), or drop --qdq-profile")
        kind = self.output_kind
        if kind not in ("gpk", "tflite", "onnx"):
            bad(f"output {self.output.name!r} must end in .gpk, .tflite or .onnx", "-o/--output",
                "use .gpk for the signed artifact, .tflite or .onnx for a bare model file")
        elif kind != "gpk" and self.target != SUFFIX_TARGET[f".{kind}"]:
            bad(f"-o {self.output.name} writes one bare {kind} model, but --target is {self.target}",
                "--target", "write a .gpk to hold several models, or drop --target")
        if self.quantize != "int8" and self.target in ("qdq", "both"):
            bad(f"QDQ ONNX is an int8 format; --quantize {self.quantize} cannot produce it", "--target",
                "use --target tflite for float16/dynamic/none")
        if self.target == "qdq" and (self.io != "float32" or self.layout != "onnx"):
            bad("QDQ ONNX keeps the ONNX signature (float32 I/O, ONNX layout); --io/--layout shape the TFLite "
                "model only", "--target", "drop --io/--layout, or use --target tflite|both")
        if self.io != "float32" and self.quantize != "int8":
            bad(f"--io {self.io} needs an int8 model (got --quantize {self.quantize})", "--io",
                "drop --io, or use --quantize int8")
        if self.needs_calibration and self.calib is None:
            bad("int8 quantization of a float model needs calibration data", "--calib",
                "pass --calib data.npz (one array per input, ~100 representative samples), "
                "or --quantize float16|dynamic|none")
        if self.num_calib is not None and self.num_calib < 1:
            bad(f"--num-calib must be >= 1 (got {self.num_calib})", "--num-calib", "e.g. --num-calib 100")
        if self.auto_keep_float < 0:
            bad("--auto-keep-float must be >= 0", "--auto-keep-float", "e.g. --auto-keep-float 2")
        if self.auto_keep_float and self.quantize != "int8":
            bad("--auto-keep-float ranks int8 layers; it needs --quantize int8", "--auto-keep-float",
                "drop --auto-keep-float")
        elif self.auto_keep_float and self.calib is None and self.holdout is None:
            bad("--auto-keep-float measures layers on data", "--auto-keep-float",
                "pass --calib or --holdout data, or drop --auto-keep-float")
        if self.float_head < 0:
            bad("--float-head must be >= 0", "--float-head", "e.g. --float-head 3")
        if self.int8_recurrent and self.quantize != "int8":
            bad("--int8-recurrent quantizes recurrent layers; it needs --quantize int8", "--int8-recurrent",
                "drop --int8-recurrent")
        if self.float_head and self.quantize != "int8":
            bad("--float-head keeps int8 layers float; it needs --quantize int8", "--float-head",
                "drop --float-head")
        if self.holdout_labels is not None and self.holdout is None:
            bad("--holdout-labels needs --holdout", "--holdout-labels", "pass --holdout data.npz too")
        if self.key is not None and kind != "gpk":
            bad("--key signs a .gpk manifest; a bare model file cannot carry a signature", "--key",
                "write -o model.gpk")
        frozen = {name for name, _ in self.input_values}
        if frozen & {inp for _, inp in self.state}:
            bad(f"input(s) {sorted(frozen & {inp for _, inp in self.state})} are both frozen (--input-value) and "
                "fed back as state (--state)", "--state", "drop one of the two for that input")
        if self.model.resolve() == self.output.resolve():
            bad("the output would overwrite the input model", "-o/--output", "choose another output path")
        return out


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'input=1,3,224,224' or 'input:1x3x224x224' -> ('input', (1, 3, 224, 224))."""
    sep = "=" if "=" in text else ":"
    name, _, dims = text.rpartition(sep)
    try:
        shape = tuple(int(d) for d in re.split(r"[,x]", dims))
    except ValueError:          # empty or non-numeric dimension, e.g. "1,,8" or "1,N,8"
        shape = ()
    if not name or not shape or any(d < 1 for d in shape):
        raise UsageError(f"cannot read input shape {text!r}", where="--input-shape",
                         hint="write NAME=D0,D1,... e.g. --input-shape input=1,3,224,224")
    return name, shape


def parse_class_axis(text: str) -> tuple[str, int | None]:
    """'2' -> ('*', 2) (every output), 'logits=-1' -> ('logits', -1), 'boxes=none' -> ('boxes', None)."""
    name, sep, axis = text.rpartition("=")
    name = name if sep else "*"
    value = axis.strip().lower()
    try:
        parsed = None if value == "none" else int(value)
    except ValueError:
        parsed = "bad"
    if parsed == "bad" or not name:
        raise UsageError(f"cannot read class axis {text!r}", where="--class-axis",
                         hint="write AXIS (every output), OUTPUT=AXIS or OUTPUT=none (no top-1 for it), "
                              "e.g. --class-axis logits=-1")
    return name, parsed
