"""The one place that wires a conversion, and the verify entry point.

    convert(cfg) : load -> calibrate -> tflite.build and/or qdq.build -> [auto keep-float]
                   -> verify on holdout -> manifest -> write (atomic: nothing on failure)
    verify(...)  : run an artifact and its float reference on the same data; metrics report

Every stage is a call into the package that owns it (frontend, calibrate, tflite, qdq, verify);
this module only decides the order, carries data between stages and assembles the manifest
(``converters.manifest``). The output file is written last, by ``core.artifact.atomic_write``,
so any error before that leaves no file behind.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from converters import act_equalize, frontend, mixed, qdq, tflite
from converters import manifest as manifest_mod
from converters import verify as verifier
from converters.calibrate import data, stream
from converters.calibrate.runner import collect_stats
from converters.carried import warn as warn_carried
from converters.config import ConvertConfig
from converters.errors import ConvertError, UnsupportedOpsError
from converters.freeze import FrozenInputWarning, constant_controls, freeze_inputs
from converters.frontend.cut import cut_outputs
from converters.frontend.inline_if import inline_constant_ifs
from converters.frontend.load import read_model
from converters.frontend.names import check_keep_float, node_names
from converters.frontend.quantized import check_annotated
from converters.frontend.shapes import PinnedShapeWarning
from converters.lower import check_supported
from converters.tflite import head_nodes
from converters.verify import VerifyReport
from converters.verify.shapes import candidate_shapes, pin
from core import artifact, keys
from core.errors import RuntimeBackendError, UsageError
from core.litert import make_interpreter

@dataclass
class ConvertResult:
    output: Path
    manifest: dict
    files: dict[str, bytes]
    report: dict | None = None
    keep_float: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"output": str(self.output), "bytes": self.output.stat().st_size,
                "models": {name: len(data) for name, data in self.files.items()},
                "keep_float": self.keep_float, "fidelity": self.report,
                "inputs": self.manifest.get("inputs"), "outputs": self.manifest.get("outputs")}

    def render(self) -> str:
        lines = [f"wrote {self.output} ({self.output.stat().st_size:,} bytes)"]
        if self.output.suffix == ".gpk":          # a bare model file is its one member
            for name, data in self.files.items():
                lines.append(f"  {name:<16} {len(data):>12,} bytes")
        if self.keep_float:
            lines.append(f"  kept in float: {', '.join(self.keep_float)}")
        for fmt, report in (self.report or {}).items():
            lines += ["", f"fidelity of the {fmt} model on the holdout:", render_report(report)]
        return "\n".join(lines)


# --- convert -------------------------------------------------------------------------------------
def convert(cfg: ConvertConfig, log=None) -> ConvertResult:
    """Run the whole conversion described by ``cfg`` and write its output (see module doc).

    ``log`` (optional, e.g. ``print``) receives one line per stage, for the CLI's progress output.
    """
    say = log or (lambda message: None)
    key = _signing_key(cfg)             # a bad key fails now, not after minutes of calibration
    raw = read_model(cfg.model)         # what the data pins and freezes, before the checked load
    cfg, from_data = shapes_from_data(cfg, raw)
    cfg, found = freeze_constant_controls(cfg, raw, say)
    del raw                             # a second copy of every weight (ConvNeXt-T: 110 MB) for the whole run
    model = load_model(cfg.model, cfg.shape_overrides, cfg.frozen_values, cfg.outputs)
    say(f"loaded {cfg.model.name}: opset {manifest_mod.opset_of(model)}, {len(model.graph.node)} nodes")
    model, carried = frontend.dequantize(model)     # an already-quantized model: its float graph + scales
    if carried is not None:
        say(f"the model is quantized ({carried.form}): {len(carried.activations)} tensors and "
            f"{len(carried.weights)} weights keep its own scales")
    keep = set(check_keep_float(model, cfg.keep_float))    # before the slow steps
    # every unsupported node at once, before calibration; the IR it built is lowered later
    # a QDQ-only conversion takes its parameters from a TFLite build too (``qdq_source``): one IR for
    # that build and auto's int8 view, or None when the TFLite lowering refuses the model
    graph = check_lowerable(model, cfg) if "tflite" in cfg.formats else _lowerable_or_none(model, cfg)
    # Holdout data and labels are read before calibration, the slow step, so their errors come first.
    state = stream_state(cfg.calib or cfg.holdout, model, cfg.state, say)
    if cfg.quantize == "int8" and not cfg.int8_recurrent:
        keep |= recurrence(cfg, model, state, say)
    holdout = load_samples(cfg.holdout, model, cfg.preprocess, min_samples=1, state=state) if cfg.holdout else None
    labels = load_labels(cfg.holdout_labels) if cfg.holdout_labels else None
    if cfg.equalize and cfg.needs_calibration and carried is None:
        model, graph = equalize_activations(model, cfg, state, graph, say)
    stats, calib = calibrate_stats(model, cfg, state, graph, keep) if cfg.needs_calibration else (None, None)
    ranges = stats.ranges if stats is not None else None
    if calib is not None:
        say(f"calibrated {len(ranges)} tensors on {len(calib)} samples ({cfg.observer})")
    if carried is not None and cfg.quantize == "int8":
        ranges = carried_ranges(carried, ranges)
        keep |= carried.float_nodes
    if cfg.auto_keep_float:
        keep |= worst_nodes(model, ranges, calib, cfg, holdout or calib, keep)
        say(f"keeping in float: {', '.join(sorted(keep))}")
    say(f"building {' + '.join(cfg.formats)} ({cfg.quantize}, io {cfg.io}, layout {cfg.layout})")
    built, head = build_models(model, ranges, calib, cfg, frozenset(keep), carried, graph=graph, stats=stats)
    ranges = ranges if calib is not None else None     # the manifest records a calibration only with data
    keep |= head
    if holdout is not None:
        say(f"verifying on {len(holdout)} holdout samples")
    report = (fidelity(built, model, holdout, labels, cfg.progress, class_axes=dict(cfg.class_axes), state=state)
              if holdout is not None else None)
    man = manifest_mod.build(cfg, model, built, ranges=ranges, report=report, keep_float=sorted(keep), state=state)
    files = {manifest_mod.MODEL_ENTRIES[fmt][1]: data for fmt, (data, _) in built.items()}
    if found:
        man["frozen_inputs_found"] = sorted(found)
    if from_data:
        man["input_shapes_from_data"] = from_data
    if carried is not None:             # the model's own scales and what was kept
        man["quantization"]["carried"] = carried.summary()
    _write(cfg, man, files, key)
    return ConvertResult(cfg.output, man, files, report, sorted(keep))


def shapes_from_data(cfg: ConvertConfig, model: onnx.ModelProto):
    """(cfg, {input: shape}): dynamic dims the calibration data fixes (``data.shapes_from_data``)
    pinned as --input-shape would, said in a warning and recorded in the manifest."""
    if cfg.calib is None:
        return cfg, {}
    found = data.shapes_from_data(cfg.calib, data.input_specs(model), cfg.shape_overrides)
    if not found:
        return cfg, {}
    text = " ".join(f"{name}={','.join(map(str, shape))}" for name, shape in found.items())
    warnings.warn(f"dynamic input shape(s) pinned from the calibration data: --input-shape {text} "
                  "(pass --input-shape to choose others)", PinnedShapeWarning, stacklevel=2)
    return dataclasses.replace(cfg, input_shapes=(*cfg.input_shapes, *found.items())), \
        {name: list(shape) for name, shape in found.items()}


def freeze_constant_controls(cfg: ConvertConfig, model: onnx.ModelProto, say):
    """(cfg, found): inputs of ``model`` (as read) that only steer control flow and hold one value
    in the whole calibration data (``freeze.constant_controls``) frozen as --input-value would,
    with a warning."""
    found = constant_controls(model, cfg.calib) if cfg.calib is not None else {}
    if not found:
        return cfg, {}
    text = ", ".join(f"{name}={','.join(map(str, values))}" for name, values in found.items())
    warnings.warn(f"input(s) {text} only steer control flow (If/Loop) and hold one value in every calibration "
                  f"sample: the model is converted for that value (pass --input-value to choose another)",
                  FrozenInputWarning, stacklevel=2)
    say(f"frozen from the calibration data: {text}")
    return dataclasses.replace(cfg, input_values=(*cfg.input_values, *found.items())), found


def equalize_activations(model: onnx.ModelProto, cfg: ConvertConfig, state, graph, say):
    """(model, IR): layer outputs with outlier channels rescaled into the weights around them,
    exactly in float (``act_equalize``), measured on a few calibration samples; the IR that
    ``check_lowerable`` built is rebuilt when the model changed."""
    samples = load_samples(cfg.calib, model, cfg.preprocess, limit=cfg.num_calib, state=state)
    model, sites = act_equalize.equalize(model, samples)
    if sites:
        gains = [s.gain for s in sites]
        say(f"equalized {len(sites)} layer output(s) with outlier channels (int8 rounding noise at "
            f"their consumers {min(gains):.0f}-{max(gains):.0f} dB lower)")
        graph = check_lowerable(model, cfg) if graph is not None else None
    return model, graph


def calibrate(model: onnx.ModelProto, cfg: ConvertConfig, state=()):
    """(ranges by ONNX tensor name, the calibration samples) from ``cfg.calib``; ``state``: the
    (output, input) pairs a recorded sequence is unrolled with (``stream_state``)."""
    stats, samples = calibrate_stats(model, cfg, state)
    return stats.ranges, samples


def calibrate_stats(model: onnx.ModelProto, cfg: ConvertConfig, state=(), graph=None, keep=frozenset()):
    """``calibrate``, with the ranges in a ``CalibrationStats`` that also holds the channel
    statistics the TFLite build reads: one float pass over the samples instead of two. ``graph``:
    the IR ``check_lowerable`` built; ``auto`` scores each range as the int8 TFLite model cuts it,
    ``keep`` (ONNX nodes) float."""
    samples = load_samples(cfg.calib, model, cfg.preprocess, limit=cfg.num_calib, state=state)
    view = _int8_view(model, cfg, graph, keep) if cfg.observer == "auto" and cfg.quantize == "int8" else None
    return collect_stats(model, samples, method=cfg.observer, progress=cfg.progress, view=view), samples


def _int8_view(model: onnx.ModelProto, cfg: ConvertConfig, graph, keep=frozenset()):
    """The int8 TFLite model's view of the tensors, from ``graph`` or an IR built here, so every
    target (``qdq`` alone too) and ``calibrate`` get the ranges ``convert --target tflite`` gets.
    A model the TFLite lowering refuses (a ``qdq``-only conversion) is scored without it."""
    graph = _lowerable_or_none(model, cfg) if graph is None else graph
    if graph is None:
        return None
    return tflite.int8_view(graph, int8_recurrent=cfg.int8_recurrent, keep_float=frozenset(keep))


def _lowerable_or_none(model: onnx.ModelProto, cfg: ConvertConfig):
    """``check_lowerable``'s IR, or None when the TFLite lowering refuses the model."""
    try:
        return check_lowerable(model, cfg)
    except UnsupportedOpsError:
        return None


def load_model(path, shapes=None, values=None, outputs=()) -> onnx.ModelProto:
    """``frontend.load_model``, with the inputs named in ``values`` frozen first (converters.freeze)
    so shape inference and folding see their values, then cut at ``outputs`` (frontend/cut.py)."""
    if not values and not outputs:
        return frontend.load_model(path, shapes or None)
    shapes = dict(shapes or {})
    model = read_model(path)
    if values:
        # an If on a frozen input keeps one branch: inlined here, so calibration and QDQ see it
        model = inline_constant_ifs(freeze_inputs(model, values, shapes))
    before = {i.name for i in model.graph.input}
    if outputs:
        model = cut_outputs(model, outputs, where=str(path))
    dropped = before - {i.name for i in model.graph.input}     # read only by the cut-off part
    shapes = {k: v for k, v in shapes.items() if k not in (values or {}) and k not in dropped}
    return frontend.prepare(model, shapes or None, where=str(path))


def stream_state(path, model: onnx.ModelProto, explicit=(), say=None) -> list[tuple[str, str]]:
    """(output, input) state pairs of a streaming model: ``explicit`` (--state) plus the ones found
    for inputs the data at ``path`` lacks (calibrate.stream.state_pairs)."""
    if path is None:
        return list(explicit)
    pairs = stream.state_pairs(model, data.input_specs(model), data.array_names(path), explicit)
    if pairs and say is not None:
        say("streaming: " + ", ".join(f"{o} -> {i}" for o, i in pairs) + " fed back step by step"
            + ("" if len(pairs) == len(explicit) else " (found by name/shape; --state OUT=IN to choose)"))
    return pairs


def recurrence(cfg: ConvertConfig, model: onnx.ModelProto, state, say) -> set[str]:
    """ONNX nodes from each state input to its state output (calibrate.stream.recurrence), kept
    float as an LSTM is: the ``state`` pairs, or those a recording of the float model's own
    states shows (calibrate.stream.recorded_pairs; only when an output fits an input)."""
    pairs = list(state)
    candidates = stream.candidate_pairs(model, data.input_specs(model)) if not pairs and cfg.calib else []
    if candidates:
        steps = load_samples(cfg.calib, model, cfg.preprocess, limit=stream.RECORDED_STEPS)
        pairs = stream.recorded_pairs(model, steps, candidates)
    nodes = stream.recurrence(model, pairs)
    if nodes:
        say(f"recurrence {', '.join(f'{i} -> {o}' for o, i in pairs)}: {len(nodes)} node(s) kept float "
            "(as LSTM/GRU/RNN; --int8-recurrent rounds them)")
    return nodes


def load_samples(path, model: onnx.ModelProto, preprocess=None, *, limit=None, min_samples=None, state=()):
    """Per-sample feed dicts for ``model``'s inputs (calibrate.data does every check). With
    ``state`` pairs, the data is a recording without those inputs: it is run step by step and
    each step gets the state the previous one produced (calibrate.stream.unroll)."""
    kwargs = {} if min_samples is None else {"min_samples": min_samples}
    fed = {inp for _, inp in state}
    specs = [s for s in data.input_specs(model) if s.name not in fed]
    if not fed:
        return data.load_dataset(path, specs, preprocess=preprocess, limit=limit, **kwargs)
    steps = data.load_dataset(path, specs, preprocess=preprocess, **kwargs)
    return stream.unroll(model, steps, state, limit=limit)


def build_models(model, ranges, calib, cfg: ConvertConfig, keep: frozenset[str],
                 carried=None, graph=None, stats=None) -> tuple[dict[str, tuple[bytes, object]], set[str]]:
    """({format: (bytes, build result)} for the formats ``cfg`` asks for, the ONNX nodes of the
    ``--float-head``). The TFLite build finds the head in its own lowering and is the source of
    the QDQ model's parameters; a QDQ-only conversion builds it too, without writing it
    (``qdq_source``; a "layer" is a TFLite op with weights: tflite/head.py).
    ``carried``: an already-quantized model's own weights, kept by both builds. ``graph``: the IR
    ``check_lowerable`` built, handed to ``tflite.build`` (which lowers it in place). ``stats``:
    the calibration pass's ``CalibrationStats`` (``calibrate_stats``), for ``tflite.build``."""
    built, head, source = {}, set(), None
    if "tflite" in cfg.formats:
        options = tflite.TFLiteOptions(quantize=cfg.quantize, io=cfg.io, layout=cfg.layout, keep_float=keep,
                                       float_head=cfg.float_head, int8_recurrent=cfg.int8_recurrent,
                                       weight_scales=carried.node_weights if carried else {})
        result = tflite.build(model, ranges, options, samples=calib, graph=graph, stats=stats)
        self_check(result.flatbuffer, result, model)
        built["tflite"] = (result.flatbuffer, result)
        head, source = set(result.float_head) | set(result.float_front), result   # the same float nodes in QDQ
    else:           # QDQ only: its parameters (and the head) still come from a TFLite build
        source = qdq_source(model, ranges, calib, cfg, keep, carried, stats, graph)
        if source is not None:
            head = set(source.float_head) | set(source.float_front)
        elif cfg.float_head:
            head = set(head_nodes(model, cfg.float_head))
    if "qdq" in cfg.formats:
        # a dynamic (quantize_dynamic) model carries no activation scales to replace
        if carried is not None and carried.activations and cfg.qdq_flavour == "tensorrt":
            warn_carried("the tensorrt QDQ profile writes symmetric activations (zero point 0), so the model's own "
                 "activation scales are replaced (its weights are kept); --qdq-profile onnxruntime writes them back")
        # carried weights have no rounding error for bias correction to undo
        # the TFLite build is the source of the QDQ parameters: one compiler, two writers
        qmodel = qdq.build(model, ranges, keep_float=tuple(sorted(keep | head)), profile=cfg.qdq_flavour,
                           samples=None if carried else calib, weight_scales=carried.weights if carried else None,
                           tflite=source)
        built["qdq"] = (qmodel.SerializeToString(), qmodel)
    return built, head


def qdq_source(model, ranges, calib, cfg: ConvertConfig, keep: frozenset[str], carried=None, stats=None,
               graph=None):
    """The TFLite build a QDQ-only conversion takes its parameters and ``--float-head`` from (not
    written), or None when the TFLite lowering refuses the model: ``qdq.build`` then applies the
    same parameter functions to the ranges itself. ``graph``: ``check_lowerable``'s IR, lowered
    here instead of built again."""
    options = tflite.TFLiteOptions(keep_float=keep, float_head=cfg.float_head,
                                   weight_scales=carried.node_weights if carried else {})
    try:
        return tflite.build(model, ranges, options, samples=calib, stats=stats, graph=graph)
    except ConvertError:
        return None


def self_check(flatbuffer: bytes, result, model: onnx.ModelProto) -> None:
    """The model must load in the real LiteRT (XNNPACK on, as on a device) before it is written.
    ``result`` (the TFLiteResult) and ``model`` turn LiteRT's op numbers into ONNX node names."""
    try:
        make_interpreter(flatbuffer)
    except RuntimeBackendError as exc:
        if exc.code == "runtime.no_litert":
            return                      # nothing to check with on this host; verify will say so
        nodes = failing_nodes(exc.message, result, model)
        keep = " ".join(f"--keep-float {n}" for n in nodes) if nodes else "--keep-float on the failing node"
        raise ConvertError(f"the converted TFLite model does not load in LiteRT: {exc.message}",
                           code="convert.self_check", where=f"ONNX node(s) {', '.join(nodes)}" if nodes else None,
                           hint=f"this is a converter bug, please report it with the model; {keep} may work "
                                "around it") from exc


def failing_nodes(message: str, result, model: onnx.ModelProto) -> list[str]:
    """The ONNX nodes (as --keep-float takes them) of the ops LiteRT names in ``message``
    ("Node number 9 (TANH) failed to prepare"): op index -> the lowering's node, when the opcode
    agrees (a delegate's node numbers are not op indexes)."""
    known = set(node_names(model))
    found = []
    for index, opcode in re.findall(r"Node number (\d+) \((\w+)\)", message):
        i = int(index)
        if i < len(result.ops) and result.ops[i] == opcode and i < len(result.op_nodes):
            node = result.op_nodes[i]
            if node in known and node not in found:
                found.append(node)
    return found


def worst_nodes(model, ranges, calib, cfg: ConvertConfig, samples, keep: set[str]) -> set[str]:
    """ONNX nodes to keep in float for ``--auto-keep-float`` (greedy and measured: converters.mixed)."""
    return mixed.choose(model, ranges, samples, cfg.auto_keep_float, layout=cfg.layout,
                        keep=frozenset(keep), float_head=cfg.float_head, progress=cfg.progress)


def fidelity(built: dict, model: onnx.ModelProto, samples, labels=None, progress=True, class_axes=None,
             state=()) -> dict:
    """The verify report of each built model against the float model, keyed by model format
    ("tflite" | "onnx", as in the manifest's ``models`` and ``verify --format``)."""
    report = {}
    for target, (data, result) in built.items():
        fmt = manifest_mod.MODEL_ENTRIES[target][0]
        rep = verifier.verify(data, model, samples, fmt=fmt, labels=labels, class_axes=class_axes, state=state,
                              tensor_map=getattr(result, "tensor_map", None), progress=progress)
        report[fmt] = rep.to_dict()
    return report


def check_lowerable(model: onnx.ModelProto, cfg: ConvertConfig):
    """Raise the UnsupportedOpsError (or DataDependentError) that ``tflite.build`` would raise,
    now: the IR, passes and checks take a second, calibration can take minutes. Returns that IR
    (``tflite.ir_graph``), for ``tflite.build`` to lower instead of building it again."""
    graph = tflite.ir_graph(model, tflite.TFLiteOptions(quantize=cfg.quantize, layout=cfg.layout))
    check_supported(graph)
    return graph


def _signing_key(cfg: ConvertConfig):
    if cfg.key is None:
        return None
    return keys.load_private(cfg.key)


def carried_ranges(carried, calibrated: dict | None) -> dict:
    """The ranges of an already-quantized model: its own parameters win; calibration (when
    given) fills the tensors it leaves bare, else those must be none (one error lists them)."""
    if calibrated is None:
        check_annotated(carried)
    return {**(calibrated or {}), **carried.ranges()}


def _write(cfg: ConvertConfig, man: dict, files: dict[str, bytes], key) -> None:
    try:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        if cfg.output_kind == "gpk":
            artifact.write(cfg.output, man, files, key)
        else:
            (data,) = files.values()
            artifact.atomic_write(cfg.output, data)
    except OSError as exc:
        raise UsageError(f"cannot write {cfg.output}: {exc.strerror or exc}", where=str(cfg.output),
                         code="convert.output", hint="choose a writable output path (-o)") from exc


def load_labels(path) -> np.ndarray:
    return verifier.load_labels(path)


# --- verify --------------------------------------------------------------------------------------
def verify(source, reference, data, *, labels=None, per_layer=False, fmt=None, limit=None, preprocess=None,
           trusted_keys=None, progress=True, input_shapes=None, input_values=None, state=None, class_axes=None,
           outputs=None):
    """VerifyReport of ``source`` (.gpk/.tflite/.onnx) against the float ``reference`` on ``data``.

    The artifact is opened (and its signature checked against ``trusted_keys``, paths to .pub
    files) before any data is read; an image folder uses the manifest's preprocessing unless
    ``preprocess`` overrides it. The reference is made like the artifact was: its dynamic inputs
    pinned to the artifact's shapes (``input_shapes`` {name: dims} override), the inputs the
    manifest froze frozen (``input_values`` {name: values} override), and a recording without
    the state inputs unrolled with the manifest's state pairs (``state`` [(out, in)] overrides).
    ``class_axes``: {output or "*": axis or None}, where top-1 is taken (verify/classes.py).
    ``outputs``: cut the reference at these tensors (default: the manifest's ``cut_outputs``).
    """
    keys = _public_keys(trusted_keys)
    kind, model_bytes, manifest = verifier.open_candidate(Path(source), fmt=fmt, trusted_keys=keys)
    manifest = manifest or {}
    raw, found = read_model(reference), candidate_shapes(kind, model_bytes, manifest)
    # a bare .tflite records no frozen inputs: a control input it lacks takes the data's one value
    lacked = {k: v for k, v in constant_controls(raw, data).items() if k not in found}
    values = {**lacked, **_frozen(manifest), **(input_values or {})}
    shapes = pin(raw, found, input_shapes)
    ref = load_model(reference, shapes, values, tuple(outputs or manifest.get("cut_outputs") or ()))
    if preprocess is None:
        preprocess = manifest.get("preprocessing")
    pairs = state if state else [(p["output"], p["input"]) for p in manifest.get("state", [])]
    pairs = stream_state(data, ref, pairs)
    # a recording is cut to its first ``limit`` steps (consecutive: the candidate runs closed-loop)
    samples = load_samples(data, ref, preprocess, limit=None if pairs else limit, min_samples=1, state=pairs)
    samples = samples[:limit] if pairs and limit is not None else samples
    truth = load_labels(labels) if labels is not None else None
    if truth is not None and limit is not None:
        truth = truth[:limit]
    return verifier.verify(model_bytes, ref, samples, fmt=kind, labels=truth, per_layer=per_layer,
                           tensor_map=manifest.get("tensor_map"), progress=progress, class_axes=class_axes,
                           state=pairs)


def _frozen(manifest: dict) -> dict[str, tuple[float, ...]]:
    """The manifest's ``frozen_inputs`` as --input-value takes them."""
    return {name: tuple(value) if isinstance(value, list) else (value,)
            for name, value in (manifest.get("frozen_inputs") or {}).items()}


def _public_keys(paths):
    if not paths:
        return None
    return [keys.load_public(p) for p in paths]


def render_report(report) -> str:
    if isinstance(report, dict):
        report = VerifyReport.from_dict(report)
    return report.render()
