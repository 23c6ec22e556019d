"""The one place that wires a conversion, and the verify entry point.

    convert(cfg) : load -> calibrate -> tflite.build and/or qdq.build -> [auto keep-float]
                   -> verify on holdout -> manifest -> write (atomic: nothing on failure)
    verify(...)  : run an artifact and its float reference on the same data; metrics report

Every stage is a call into the package that owns it (frontend, calibrate, tflite, qdq, verify);
this module only decides the order, carries data between stages and assembles the manifest
(``converters.manifest``). The output file is written last, by ``edge.artifact.atomic_write``,
so any error before that leaves no file behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from converters import manifest as manifest_mod
from converters.config import ConvertConfig
from edge import artifact
from edge.errors import UsageError

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
    from converters import frontend
    from converters.frontend.names import check_keep_float
    say = log or (lambda message: None)
    key = _signing_key(cfg)             # a bad key fails now, not after minutes of calibration
    model = frontend.load_model(cfg.model, cfg.shape_overrides or None)
    say(f"loaded {cfg.model.name}: opset {manifest_mod.opset_of(model)}, {len(model.graph.node)} nodes")
    keep = set(check_keep_float(model, cfg.keep_float))    # before the slow steps
    # Holdout data and labels are read before calibration, the slow step, so their errors come first.
    holdout = load_samples(cfg.holdout, model, cfg.preprocess, min_samples=1) if cfg.holdout else None
    labels = load_labels(cfg.holdout_labels) if cfg.holdout_labels else None
    ranges, calib = calibrate(model, cfg) if cfg.needs_calibration else (None, None)
    if calib is not None:
        say(f"calibrated {len(ranges)} tensors on {len(calib)} samples ({cfg.observer})")
    if cfg.auto_keep_float:
        keep |= worst_nodes(model, ranges, calib, cfg, holdout or calib, keep)
        say(f"keeping in float: {', '.join(sorted(keep))}")
    say(f"building {' + '.join(cfg.formats)} ({cfg.quantize}, io {cfg.io}, layout {cfg.layout})")
    built, head = build_models(model, ranges, calib, cfg, frozenset(keep))
    keep |= head
    if holdout is not None:
        say(f"verifying on {len(holdout)} holdout samples")
    report = fidelity(built, model, holdout, labels, cfg.progress) if holdout is not None else None
    man = manifest_mod.build(cfg, model, built, ranges=ranges, report=report, keep_float=sorted(keep))
    files = {manifest_mod.MODEL_ENTRIES[fmt][1]: data for fmt, (data, _) in built.items()}
    _write(cfg, man, files, key)
    return ConvertResult(cfg.output, man, files, report, sorted(keep))


def calibrate(model: onnx.ModelProto, cfg: ConvertConfig):
    """(ranges by ONNX tensor name, the calibration samples) from ``cfg.calib``."""
    from converters.calibrate import collect_ranges
    samples = load_samples(cfg.calib, model, cfg.preprocess, limit=cfg.num_calib)
    return collect_ranges(model, samples, method=cfg.observer, progress=cfg.progress), samples


def load_samples(path, model: onnx.ModelProto, preprocess=None, *, limit=None, min_samples=None):
    """Per-sample feed dicts for ``model``'s inputs (calibrate.data does every check)."""
    from converters.calibrate import data
    kwargs = {} if min_samples is None else {"min_samples": min_samples}
    return data.load_dataset(path, data.input_specs(model), preprocess=preprocess, limit=limit, **kwargs)


def build_models(model, ranges, calib, cfg: ConvertConfig,
                 keep: frozenset[str]) -> tuple[dict[str, tuple[bytes, object]], set[str]]:
    """({format: (bytes, build result)} for the formats ``cfg`` asks for, the ONNX nodes of the
    ``--float-head``). The TFLite build finds the head in its own lowering; a QDQ-only build
    lowers once just for that (a "layer" is a TFLite op with weights: tflite/head.py)."""
    built, head = {}, set()
    if "tflite" in cfg.formats:
        from converters import tflite
        options = tflite.TFLiteOptions(quantize=cfg.quantize, io=cfg.io, layout=cfg.layout, keep_float=keep,
                                       float_head=cfg.float_head, int8_recurrent=cfg.int8_recurrent)
        result = tflite.build(model, ranges, options, samples=calib)
        _self_check(result.flatbuffer)
        built["tflite"] = (result.flatbuffer, result)
        head = set(result.float_head)
    elif cfg.float_head:
        from converters.tflite import head_nodes
        head = set(head_nodes(model, cfg.float_head))
    if "qdq" in cfg.formats:
        from converters import qdq
        qmodel = qdq.build(model, ranges, keep_float=tuple(sorted(keep | head)), profile=cfg.qdq_flavour,
                           samples=calib)
        built["qdq"] = (qmodel.SerializeToString(), qmodel)
    return built, head


def _self_check(flatbuffer: bytes) -> None:
    """The model must load in the real LiteRT (XNNPACK on, as on a device) before it is written."""
    from converters.errors import ConvertError
    from edge.errors import RuntimeBackendError
    from edge.litert import make_interpreter
    try:
        make_interpreter(flatbuffer)
    except RuntimeBackendError as exc:
        if exc.code == "runtime.no_litert":
            return                      # nothing to check with on this host; verify will say so
        raise ConvertError(f"the converted TFLite model does not load in LiteRT: {exc.message}",
                           code="convert.self_check",
                           hint="this is a converter bug, please report it with the model; "
                                "--keep-float on the failing node may work around it") from exc


def worst_nodes(model, ranges, calib, cfg: ConvertConfig, samples, keep: set[str]) -> set[str]:
    """ONNX nodes to keep in float for ``--auto-keep-float`` (greedy and measured: converters.mixed)."""
    from converters import mixed
    return mixed.choose(model, ranges, samples, cfg.auto_keep_float, layout=cfg.layout,
                        keep=frozenset(keep), float_head=cfg.float_head, progress=cfg.progress)


def fidelity(built: dict, model: onnx.ModelProto, samples, labels=None, progress=True) -> dict:
    """The verify report of each built model against the float model, keyed by model format
    ("tflite" | "onnx", as in the manifest's ``models`` and ``verify --format``)."""
    from converters import verify as verifier
    report = {}
    for target, (data, result) in built.items():
        fmt = manifest_mod.MODEL_ENTRIES[target][0]
        rep = verifier.verify(data, model, samples, fmt=fmt, labels=labels,
                              tensor_map=getattr(result, "tensor_map", None), progress=progress)
        report[fmt] = rep.to_dict()
    return report


def _signing_key(cfg: ConvertConfig):
    if cfg.key is None:
        return None
    from firmware import keys
    return keys.load_private(cfg.key)


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
    from converters.verify import load_labels as load
    return load(path)


# --- verify --------------------------------------------------------------------------------------
def verify(source, reference, data, *, labels=None, per_layer=False, fmt=None, limit=None, preprocess=None,
           trusted_keys=None, progress=True):
    """VerifyReport of ``source`` (.gpk/.tflite/.onnx) against the float ``reference`` on ``data``.

    The artifact is opened (and its signature checked against ``trusted_keys``, paths to .pub
    files) before any data is read; an image folder uses the manifest's preprocessing unless
    ``preprocess`` overrides it.
    """
    from converters import frontend
    from converters import verify as verifier
    keys = _public_keys(trusted_keys)
    kind, model_bytes, manifest = verifier.open_candidate(Path(source), fmt=fmt, trusted_keys=keys)
    ref = frontend.load_model(reference)
    if preprocess is None and manifest:
        preprocess = manifest.get("preprocessing")
    samples = load_samples(data, ref, preprocess, limit=limit, min_samples=1)
    truth = load_labels(labels) if labels is not None else None
    if truth is not None and limit is not None:
        truth = truth[:limit]
    tensor_map = (manifest or {}).get("tensor_map")
    return verifier.verify(model_bytes, ref, samples, fmt=kind, labels=truth, per_layer=per_layer,
                           tensor_map=tensor_map, progress=progress)


def _public_keys(paths):
    if not paths:
        return None
    from firmware import keys
    return [keys.load_public(p) for p in paths]


def render_report(report) -> str:
    from converters.verify import VerifyReport
    if isinstance(report, dict):
        report = VerifyReport.from_dict(report)
    return report.render()
