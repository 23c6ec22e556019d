"""The TFLite backend: ONNX model -> IR -> passes -> lowering -> (quantization) -> flatbuffer.

    build(model, ranges, options, *, samples=None, stats=None) -> TFLiteResult

``ranges`` maps ONNX tensor names to (min, max) from ``converters.calibrate.collect_ranges``;
``samples`` (optional, the same calibration feeds) lets the backend measure ranges of tensors its
own lowering creates by running the float TFLite model (see ``ranges.py``); ``stats`` (the
``CalibrationStats`` of ``calibrate.collect_stats``: channel means and ranges gathered in the same
pass as the ranges) spares that float pass whatever they already tell (``onnx_stats.py``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx

from converters import lower as lowering     # called as lowering.lower: one patchable door
from converters.calibrate.select import Int8View
from converters.errors import ConvertError
from converters.frontend import to_graph
from converters.frontend.names import check_keep_float, node_names
from converters.ir import Graph
from converters.passes import run_pipeline
from converters.tflite import onnx_stats, precision, saturate, spectrum
from converters.tflite import ranges as ranges_mod
from converters.tflite.head import head_nodes, head_of  # noqa: F401  (head_nodes: for api.py)
from converters.tflite.quantize import BIAS_CORRECTED, quantize_int8, rounded_tensors
from converters.tflite.rules import data_inputs
from converters.tflite.weights import to_dynamic, to_float16
from converters.tflite.writer import serialize
from converters.tgraph import TGraph
from core.config import IoType, values
from core.errors import UsageError

QUANTIZE_MODES = ("int8", "float16", "dynamic", "none")
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
IO_TYPES = values(IoType)
LAYOUTS = ("onnx", "nhwc")


@dataclass(frozen=True)
class TFLiteOptions:
    quantize: str = "int8"            # int8 | float16 | dynamic | none
    io: str = "float32"               # float32 | int8 | uint8 (int8 mode only)
    layout: str = "onnx"              # onnx | nhwc (4-D inputs/outputs channels-last)
    keep_float: frozenset = field(default_factory=frozenset)   # ONNX node names kept in float
    float_head: int = 0               # run the first N layers in float (see tflite/head.py)
    # ONNX node -> per-output-channel scales an already-quantized model's weights carry
    # (converters.carried): their int8 values are kept
    weight_scales: dict = field(default_factory=dict, compare=False)
    # int8 mode: LSTM/GRU/RNN nodes stay float (onnxruntime's quantizer leaves them float too;
    # int8 recurrences hold ~30 dB) unless True (1.4-7x faster; docs "Recurrent layers")
    int8_recurrent: bool = False
    # int8 mode with samples: correct each layer's bias for its weights' rounding with the input
    # means of the calibration samples (quantize.py; depthwise layers never: measured on the zoo,
    # docs/quantization.md "Bias correction")
    bias_correction: bool = True

    def validate(self) -> None:
        for value, allowed, flag in ((self.quantize, QUANTIZE_MODES, "--quantize"),
                                     (self.io, IO_TYPES, "--io"), (self.layout, LAYOUTS, "--layout")):
            if value not in allowed:
                raise UsageError(f"{flag} {value!r} is not one of {', '.join(allowed)}",
                                 hint=f"use {flag} {allowed[0]}")
        if self.io != "float32" and self.quantize != "int8":
            raise UsageError(f"--io {self.io} needs --quantize int8", hint="drop --io or quantize to int8")
        if not isinstance(self.float_head, int) or self.float_head < 0:
            raise UsageError(f"--float-head must be a layer count >= 0, not {self.float_head!r}",
                             hint="e.g. --float-head 3 keeps a MobileNetV2 stem block float")


@dataclass
class IOSpec:
    name: str
    index: int
    shape: list[int]
    dtype: str
    layout: str                      # "onnx" or "nhwc"
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict:
        """Flat scale/zero_point (as edge backends report them) plus the manifest's ``quant``."""
        out = dict(self.__dict__)
        out["quant"] = (None if self.scale is None
                        else {"scale": self.scale, "zero_point": self.zero_point})
        return out


@dataclass
class TFLiteResult:
    flatbuffer: bytes
    tensor_map: dict[str, dict]       # onnx name -> {"index": int, "perm": list[int] | None}
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    ops: list[str]                    # emitted opcodes in order (for reports and tests)
    float_head: list[str] = field(default_factory=list)   # ONNX nodes --float-head kept float, sorted
    op_nodes: list[str] = field(default_factory=list)     # the ONNX node each op came from (op index order)
    float_front: list[str] = field(default_factory=list)  # ONNX nodes of a magnitude spectrum kept float, sorted


def ir_graph(model: onnx.ModelProto, options: TFLiteOptions) -> Graph:
    """The IR that ``build`` lowers: ``model`` through the frontend and the pass pipeline, which
    depends on the layout and the quantization mode (``api.check_lowerable`` checks it early)."""
    graph = to_graph(model)
    graph.io_layout, graph.quantize = options.layout, options.quantize
    return run_pipeline(graph)


def int8_view(graph: Graph, int8_recurrent: bool = False, keep_float: frozenset = frozenset()) -> Int8View:
    """What int8 does to ``graph``'s (an ``ir_graph``'s) tensors, by ONNX name, for calibration's
    ``auto`` scorer (``select.Int8View``): the tensors the lowered graph holds, less those ``build``
    keeps float whatever the ranges (the ONNX nodes ``keep_float``, recurrent layers unless
    ``int8_recurrent``, squares, normalizations, and the float regions around them:
    ``quantize.rounded_tensors``), and their ``saturate`` bounds (which Softmax else stays float
    is decided later, from the ranges). Lowers a copy; ``graph`` stays for ``build``."""
    keep = _kept_ir_nodes(graph, keep_float)
    keep |= set() if int8_recurrent else {n.name for n in graph.nodes if n.op in RECURRENT_OPS and not n.domain}
    squares = {n.name for n in graph.nodes if n.op in ("Pow", "Mul")}
    tg = lowering.lower(copy.deepcopy(graph))
    keep |= {op.node for op in tg.ops if op.opcode == "MUL" and op.node in squares and op.inputs[0] == op.inputs[1]}
    keep |= spectrum.magnitude_nodes(tg) | precision.normalizations(tg)
    bounds = saturate.bounds_by_name(tg)
    rounded = rounded_tensors(tg, frozenset(keep), set(graph.tensors) | set(graph.inputs))
    return Int8View(frozenset(tg.tensors[i].name for i in rounded if tg.tensors[i].name and not tg.tensors[i].is_const),
                    bounds)


def build(model: onnx.ModelProto, ranges: dict | None, options: TFLiteOptions = TFLiteOptions(),
          *, samples: list[dict] | None = None, graph: Graph | None = None,
          stats=None) -> TFLiteResult:
    """Lower, quantize and serialize ``model``. ``graph``: its ``ir_graph`` when the caller already
    built it for these options (``api.convert`` does, to check for unsupported ops before
    calibration); it is lowered in place, so it cannot be passed twice."""
    options.validate()
    keep_float = check_keep_float(model, options.keep_float)
    if graph is None or (graph.io_layout, graph.quantize) != (options.layout, options.quantize):
        graph = ir_graph(model, options)
    keep = _kept_ir_nodes(graph, keep_float)
    if options.quantize == "int8" and not options.int8_recurrent:
        keep |= {n.name for n in graph.nodes if n.op in RECURRENT_OPS and not n.domain}
    # Imported here, not at the top: converters.lower builds tflite.graph objects, so a top-level
    # import would make `import converters.lower` alone fail on the cycle through this package.
    tg = lowering.lower(graph)
    tg.carried = dict(options.weight_scales)
    # The head is read off this lowering (no second one) and named by ONNX nodes, so the caller
    # can keep the same nodes float in the QDQ model and list them in the manifest.
    head = sorted(head_of(tg, options.float_head) & set(node_names(model)))
    keep |= _kept_ir_nodes(graph, head)
    front = spectrum.magnitude_nodes(tg) if options.quantize == "int8" else set()
    keep |= front                       # a magnitude spectrum int8 cannot hold (spectrum.py)
    if options.quantize == "int8":
        if not ranges:
            raise ConvertError("int8 quantization needs calibration ranges", code="convert.no_ranges",
                               hint="pass --data with calibration samples, or --quantize float16")
        by_index, layer_means = _index_ranges(tg, ranges, samples, options.bias_correction, stats, keep)
        squares = frozenset(n.name for n in graph.nodes if n.op in ("Pow", "Mul"))
        keep |= precision.float_nodes(tg, by_index, squares)   # int8 would wreck these (precision.py)
        keep |= precision.normalizations(tg)                   # float between int8 neighbours, as ORT's
        quantize_int8(tg, by_index, io=options.io, keep_float=frozenset(keep), input_means=layer_means)
    elif options.quantize == "float16":
        to_float16(tg)
    elif options.quantize == "dynamic":
        to_dynamic(tg)
    names = _onnx_names(model)
    flat = serialize(tg, description=f"ganglion {options.quantize}")
    tensor_map = {t.name: {"index": i, "perm": list(t.perm) if t.perm else None}
                  for i, t in enumerate(tg.tensors) if t.name in names}
    return TFLiteResult(flat, tensor_map, _specs(tg, tg.inputs), _specs(tg, tg.outputs),
                        [op.opcode for op in tg.ops], head, [op.node for op in tg.ops],
                        sorted(_onnx_nodes(graph, front) & set(node_names(model))))


def _kept_ir_nodes(graph, names) -> set[str]:
    """IR nodes to keep float for these ONNX node names. A fused node (Conv+BN+Relu) is one
    TFLite op: naming any of its ONNX nodes keeps it float."""
    names = set(names)
    return {n.name for n in graph.nodes if {n.name, *n.attrs.get("_absorbed", [])} & names}


def _onnx_nodes(graph, ir_nodes) -> set[str]:
    """The ONNX nodes behind IR nodes ``ir_nodes`` (a fused one stands for those it absorbed)."""
    return {name for n in graph.nodes if n.name in ir_nodes for name in (n.name, *n.attrs.get("_absorbed", []))}


def _onnx_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {v.name for v in g.input} | {v.name for v in g.output}
    names |= {o for n in g.node for o in n.output}
    return names


def _index_ranges(tg: TGraph, ranges: dict, samples, with_means: bool = True, stats=None,
                  kept=frozenset()) -> tuple[dict[int, tuple], dict[int, np.ndarray]]:
    """(range by tensor index, per-channel means of the inputs of layers with weights); the means
    (for bias correction) need ``samples`` and ``with_means``, without them the dict is empty.
    ``stats``: the calibration pass's channel statistics; with them LiteRT measures only what
    they and ``ranges`` leave unknown (``onnx_stats``), often nothing. ``kept``: IR nodes that stay
    float; nothing is measured for their ops alone (an LSTM's unrolled gates: ddddocr's OCR)."""
    known = {}
    for i, t in enumerate(tg.tensors):
        if not t.is_const and t.name in ranges:
            lo, hi = (float(v) for v in ranges[t.name])
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ConvertError(f"calibration range of '{t.name}' is invalid: ({lo}, {hi})",
                                   code="convert.ranges", where=f"tensor '{t.name}'",
                                   hint="the calibration data drives this tensor to NaN/Inf; "
                                        "check the data and its preprocessing")
            known[i] = (lo, hi)
    means: dict[int, np.ndarray] = {}
    if samples:
        quantized = [op for op in tg.ops if op.node not in kept]
        layer_inputs = frozenset(op.inputs[data_inputs(op.opcode, op.inputs)[0]] for op in quantized
                                 if op.opcode in BIAS_CORRECTED and with_means)
        # Only tensors without a calibration range need measuring (the rest would be ignored), and
        # only those an op that may become int8 reads or writes.
        touched = {i for op in quantized for i in (*op.inputs, *op.outputs)} | set(tg.inputs) | set(tg.outputs)
        missing = [i for i, t in enumerate(tg.tensors) if not t.is_const and i not in known and i in touched]
        if stats is not None:
            inputs = set(tg.inputs)
            missing = [i for i in missing if tg.tensors[i].dtype == "float32" and i not in inputs]
            known.update(onnx_stats.copied_ranges(tg, known, missing, stats.channel_ranges))
            missing = [i for i in missing if i not in known]
            means, layer_inputs = onnx_stats.layer_means(tg, layer_inputs, stats.means)
        if missing or layer_inputs or stats is None:
            measured, more = ranges_mod.measure_stats(tg, samples, lambda s: _feeds(tg, s), layer_inputs,
                                                      tensors=missing)
            means.update(more)
            for i, rng in measured.items():
                known.setdefault(i, rng)
    return ranges_mod.derive(tg, known), means


def _feeds(tg: TGraph, sample: dict) -> dict[int, np.ndarray]:
    feeds = {}
    for i in tg.inputs:
        t = tg.tensors[i]
        value = np.asarray(sample[t.name], np.dtype(t.dtype))   # int inputs (ids, a sample rate) stay int
        value = np.transpose(value, t.perm) if t.perm else value
        feeds[i] = np.ascontiguousarray(value).reshape(value.shape)   # ascontiguousarray makes 0-d 1-d
    return feeds


def _specs(tg: TGraph, indices: list[int]) -> list[IOSpec]:
    out = []
    for i in indices:
        t = tg.tensors[i]
        q = t.quant
        out.append(IOSpec(t.name, i, list(t.shape), t.dtype, "nhwc" if t.perm else "onnx",
                          float(q.scale[0]) if q is not None else None,
                          int(q.zero_point[0]) if q is not None else None))
    return out
