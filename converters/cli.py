"""The converter's commands: ``ganglion convert``, ``ganglion verify``, ``ganglion inspect``.

Thin on purpose: flags become a ``ConvertConfig`` (validated there), the work happens in
``converters.api``, and this module only prints. Errors are typed (``GanglionError``) and turned
into one message and an exit code by ``edge.cli.main``; a failed conversion writes no output file
because ``api.convert`` writes last, atomically.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from converters.config import (IO_TYPES, LAYOUTS, QDQ_PROFILES, QUANTIZE, TARGETS, ConvertConfig, parse_class_axis,
                               parse_shape)
from core.vocab import signing_key

# verify --per-layer and range measurement keep every LiteRT tensor on purpose; LiteRT warns about
# that on each interpreter, which only confuses a command-line user.
warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
_default_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """The converter's own warnings (pinned shapes, frozen inputs, degenerate ranges) as one line
    for a command-line user: the file, line and source line Python adds name our code, not theirs."""
    if category.__module__.startswith("converters."):
        return f"warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning

EXISTING = click.Path(exists=True, dir_okay=True, path_type=Path)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _shapes(ctx, param, values):
    return tuple(parse_shape(v) for v in values)


def _values(ctx, param, values):
    from converters.freeze import parse_value  # optional: onnx (host extra), --help loads none
    return tuple(parse_value(v) for v in values)


def _states(ctx, param, values):
    from converters.calibrate.stream import parse_state  # optional: onnx (host extra), --help loads none
    return tuple(parse_state(v) for v in values)


def _outputs(ctx, param, values):
    from converters.frontend.cut import parse_outputs  # optional: onnx (host extra), --help loads none
    return parse_outputs(values)


def _class_axes(ctx, param, values):
    return tuple(parse_class_axis(v) for v in values)


def _model_io_options(command):
    """The flags convert and verify share: how the model's inputs and outputs are read."""
    options = [
        click.option("--input-shape", "input_shapes", multiple=True, callback=_shapes, metavar="NAME=D0,D1,..",
                     help="Fix a dynamic input shape (repeatable)."),
        click.option("--input-value", "input_values", multiple=True, callback=_values, metavar="NAME=VALUE",
                     help="Freeze an input to a constant, e.g. a sample rate: sr=16000 (repeatable; "
                          "recorded in the manifest, the model no longer takes it)."),
        click.option("--state", "state", multiple=True, callback=_states, metavar="OUT=IN",
                     help="Streaming model: output OUT is fed back as input IN on the next call; the data "
                          "is a recording without IN (repeatable; found by name/shape when omitted)."),
        click.option("--class-axis", "class_axes", multiple=True, callback=_class_axes, metavar="[OUT=]AXIS",
                     help="Class axis for top-1/accuracy (AXIS for all outputs, OUT=AXIS, OUT=none) "
                          "[default: read from the graph; n/a for detector heads and states]."),
        click.option("--outputs", "outputs", multiple=True, callback=_outputs, metavar="NAME[,NAME...]",
                     help="Cut the model at these tensors first, e.g. a detector's raw boxes and scores "
                          "before its NonZero/TopK/NMS post-processing (verify: default from the manifest)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("convert", context_settings={"max_content_width": 100})
@click.argument("model", type=EXISTING_FILE)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output: .gpk (artifact), .tflite or .onnx (bare model). Default: MODEL's name + .gpk.")
@click.option("--calib", type=EXISTING, help="Calibration data: .npy, .npz (one array per input) or an image folder.")
@click.option("--target", type=click.Choice(TARGETS), help="Model(s) to build [default: from -o; .gpk -> tflite].")
@click.option("--quantize", type=click.Choice(QUANTIZE), default="int8", show_default=True,
              help="int8: full-integer; float16: half weights; dynamic: int8 weights only; none: float32.")
@click.option("--io", "io_type", type=click.Choice(IO_TYPES), default="float32", show_default=True,
              help="Input/output dtype of the artifact (int8/uint8 for camera pipelines and accelerators).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="onnx", show_default=True,
              help="onnx keeps the ONNX signature (NCHW); nhwc takes channels-last frames.")
@click.option("--qdq-profile", type=click.Choice(QDQ_PROFILES), default=None,
              help="QDQ ONNX flavour: tensorrt (the default; Jetson: symmetric int8, float bias) or "
                   "onnxruntime (uint8 activations, int32 bias). Only with --target qdq|both.")
@click.option("--observer", default="auto", show_default=True,
              help="Range observer: auto (min/max per tensor group unless another range scores better on "
                   "calibration samples it was not fitted to), minmax (fastest), percentile[:99.99], "
                   "magnitude[:99.999] (one |x| cut: the shorter tail kept), entropy or mse.")
@click.option("--num-calib", type=int, default=100, show_default=True, help="Use at most N calibration samples.")
@click.option("--preprocess", help="Preprocessing spec for image folders, recorded in the manifest.")
@click.option("--holdout", type=EXISTING, help="Held-out data: verify the result and store the fidelity report.")
@click.option("--holdout-labels", type=EXISTING_FILE,
              help="True classes of the holdout (.npy or one integer per line): adds accuracy.")
@click.option("--labels", type=EXISTING_FILE, help="Class names, one per line, stored in the manifest.")
@click.option("--keep-float", multiple=True, metavar="NODE", help="Keep this ONNX node in float (repeatable).")
@click.option("--auto-keep-float", type=int, default=0, metavar="N",
              help="Up to N greedy steps, each keeping in float the layer (or layer pair) that most "
                   "improves the measured output SQNR (on --holdout, else --calib).")
@click.option("--float-head", type=int, default=0, metavar="N",
              help="Keep the first N layers float (faster on x86 XNNPACK for a CNN stem; see docs).")
@click.option("--int8-recurrent", is_flag=True,
              help="Quantize LSTM/GRU/RNN layers to int8 too (1.4-7x faster, ~30 dB; default: they stay "
                   "float in the int8 TFLite, as in onnxruntime's quantizer).")
@click.option("--no-equalize", "no_equalize", is_flag=True,
              help="Do not rescale layer outputs whose channels differ widely in range into the weights "
                   "around them (exact in float; on by default for int8).")
@signing_key("ed25519 private key (ganglion keys generate) that signs the .gpk.")
@_model_io_options
@click.option("--name", help="Artifact name in the manifest [default: MODEL's stem].")
@click.option("--version", "version", default="1.0.0", show_default=True, help="Artifact version.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (manifest summary) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def convert(model, output, calib, target, quantize, io_type, layout, qdq_profile, observer, num_calib, preprocess,
            holdout, holdout_labels, labels, keep_float, auto_keep_float, float_head, int8_recurrent, no_equalize, signing_key,
            input_shapes, input_values, state, class_axes, outputs, name, version, as_json, quiet):
    """Compile an ONNX MODEL into an int8 TFLite and/or QDQ ONNX artifact.

    \b
    Examples:
      ganglion convert model.onnx --calib calib.npz -o model.gpk
      ganglion convert model.onnx --calib calib.npz --holdout holdout.npz -o model.gpk --signing-key signer.key
      ganglion convert model.onnx --calib imgs/ --preprocess preprocess.toml --target both -o m.gpk
      ganglion convert model.onnx --calib calib.npz --qdq-profile onnxruntime -o model.onnx
      ganglion convert model.onnx --calib calib.npz --io int8 --layout nhwc -o model.tflite
      ganglion convert model.onnx --quantize none -o model_float.tflite
      ganglion convert model.onnx --calib calib.npz --auto-keep-float 2 --holdout holdout.npz -o model.gpk
      ganglion convert model.onnx --calib calib.npz --float-head 3 -o model.gpk
      ganglion convert vad.onnx --calib recording.npz --state stateN=state --input-value sr=16000
      ganglion convert det.onnx --calib calib.npz --outputs boxes,scores -o det.gpk

    The .gpk holds the model(s) and a manifest (inputs/outputs with quant params, preprocessing,
    labels, calibration method, and the fidelity report when --holdout is given), signed with --signing-key.
    On any error nothing is written.
    """
    from converters import api  # optional: onnx (host extra), --help loads none
    cfg = ConvertConfig(
        model=model, output=output or Path(model.stem + ".gpk"), target=target, quantize=quantize, io=io_type,
        layout=layout, qdq_profile=qdq_profile, observer=observer, calib=calib, preprocess=preprocess,
        num_calib=num_calib,
        holdout=holdout, holdout_labels=holdout_labels, labels=labels, keep_float=frozenset(keep_float),
        auto_keep_float=auto_keep_float, float_head=float_head, int8_recurrent=int8_recurrent, key=signing_key,
        equalize=not no_equalize,
        input_shapes=input_shapes, input_values=input_values, state=state, class_axes=class_axes, outputs=outputs,
        name=name,
        version=version,
        progress=not quiet and not as_json)
    result = api.convert(cfg, log=(lambda line: click.echo(line, err=True)) if cfg.progress else None)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, default=str))
        return
    click.echo(result.render())


@click.command("verify", context_settings={"max_content_width": 100})
@click.argument("artifact", type=EXISTING_FILE)
@click.option("--reference", required=True, type=EXISTING_FILE, help="The float ONNX model it came from.")
@click.option("--data", required=True, type=EXISTING, help="Held-out inputs: .npy, .npz or an image folder.")
@click.option("--labels", type=EXISTING_FILE, help="True classes (.npy or one integer per line): adds accuracy.")
@click.option("--per-layer", is_flag=True, help="Rank layers by the error each one adds (which layer broke).")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]),
              help="Which model of a .gpk to check [default: tflite if present].")
@click.option("--limit", type=int, help="Use at most N samples.")
@click.option("--preprocess", help="Preprocessing spec when --data is an image folder [default: the manifest's].")
@click.option("--trusted-key", type=EXISTING_FILE, multiple=True, help="Refuse a .gpk not signed by this key.")
@_model_io_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw the per-layer error: PLOT.png and PLOT.html.")
def verify(artifact, reference, data, labels, per_layer, fmt, limit, preprocess, trusted_key, input_shapes,
           input_values, state, class_axes, outputs, as_json, plot):
    """Compare ARTIFACT (.gpk, .tflite or QDQ .onnx) with its float ONNX model.

    Runs the artifact in the real LiteRT interpreter (onnxruntime for QDQ) and the reference in
    onnxruntime on the same inputs, and reports SQNR (dB), cosine similarity, max abs error,
    top-1 agreement, and accuracy when --labels are given. A dynamic reference takes the input
    shapes the artifact was converted with (--input-shape overrides), and the inputs its manifest
    froze and the state it feeds back (--input-value, --state override).

    \b
    Examples:
      ganglion verify model.gpk --reference model.onnx --data holdout.npz
      ganglion verify model.gpk --reference model.onnx --data holdout.npz --labels labels.npy --per-layer
      ganglion verify model.gpk --reference model.onnx --data holdout.npz --plot layers   # layers.png/.html
      ganglion verify model.tflite --reference model.onnx --data holdout.npz --json
      ganglion verify det.gpk --reference det.onnx --data holdout.npz --class-axis none
    """
    from converters import api  # optional: onnx (host extra), --help loads none
    report = api.verify(artifact, reference, data, labels=labels, per_layer=per_layer or bool(plot), fmt=fmt,
                        limit=limit, preprocess=preprocess, trusted_keys=list(trusted_key) or None,
                        progress=not as_json, input_shapes=dict(input_shapes), input_values=dict(input_values),
                        state=state, class_axes=dict(class_axes), outputs=outputs)
    if plot:
        from converters.verify import plot as plotter  # optional: onnx (host extra), --help loads none
        click.echo("wrote " + ", ".join(map(str, plotter.write(report, plot))), err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    click.echo(report.render())


@click.command("inspect", context_settings={"max_content_width": 100})
@click.argument("path", type=EXISTING_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help="Show every line (the view cuts each section at 40 lines and long metadata values).")
def inspect_cmd(path, as_json, show_all):
    """Show ops, tensors, quantization parameters and sizes of a .tflite, .onnx or .gpk file.

    \b
    Examples:
      ganglion inspect model.gpk          (manifest, signature, then each model inside)
      ganglion inspect model.tflite --json
      ganglion inspect model.onnx --all    (every node, tensor and metadata line)
    """
    from converters import inspect as inspector  # optional: onnx (host extra), --help loads none
    info = inspector.inspect(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(inspector.render(info, limit=None if show_all else inspector.SECTION_LINES))
