"""Run the float ONNX graph in onnxruntime over calibration samples and observe every float tensor.

``collect_ranges`` exposes each float intermediate as an extra graph output (so one run yields
all activations of one sample), feeds the samples one at a time and hands each tensor to its
observer, which keeps only a running summary: memory is one sample's activations plus one small
histogram per tensor, whatever the number of samples. ``collect_stats`` is the same pass, which
also gathers what the later steps would otherwise run the samples again for: the per-channel
means of the layer inputs that bias correction reads (``channels.py``).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from converters.calibrate import derive, masks, observers, select
from converters.calibrate.channels import ChannelMeans, ChannelRanges, channel_axes, range_axes
from converters.calibrate.samples import Spill
from converters.calibrate.stages import Staged
from converters.errors import CalibrationDataError, ModelLoadError
from converters.progress import bar

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                         onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every graph input, output and node output, by name.

    ``frontend.load_model`` already ran shape inference and left the types in ``value_info``, so
    they are read from there; only a model that lacks some (a QDQ model's new Q/DQ outputs, a
    hand-built graph) is inferred here, once per call."""
    types = _declared_types(model.graph)
    if any(out and not types.get(out) for node in model.graph.node for out in node.output):
        types = _declared_types(onnx.shape_inference.infer_shapes(model).graph)
    return types


def _declared_types(graph: onnx.GraphProto) -> dict[str, int]:
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}


def float_tensor_names(model: onnx.ModelProto, types: dict[str, int] | None = None) -> tuple[list[str], list[str]]:
    """(float graph inputs, float node outputs in graph order), initializers and the outputs of
    nodes computed from constants only excluded: the converter folds those to weights and reads
    their values, and observing them made onnxruntime fold a reduction of every weight at session
    start (VGG-19's ConstantOfShape weights: 2 of its 3 s, issue 8).
    ``types``: ``value_types(model)`` when the caller has it already."""
    graph = model.graph
    types = value_types(model) if types is None else types
    initializers = {init.name for init in graph.initializer}
    inputs = [vi.name for vi in graph.input
              if vi.name not in initializers and types.get(vi.name) in FLOAT_TYPES]
    seen, produced = set(), []
    constant = set(initializers)
    for node in graph.node:
        if not node.attribute or all(a.type != onnx.AttributeProto.GRAPH for a in node.attribute):
            if all(not i or i in constant for i in node.input):     # Constant, ConstantOfShape(const), ...
                constant.update(node.output)
                continue
        for name in node.output:
            if name and name not in seen and types.get(name) in FLOAT_TYPES:
                seen.add(name)
                produced.append(name)
    return inputs, produced


# A tensor's [min, max] computed in the graph, and its sum: onnxruntime's ReduceMin/ReduceMax skip a
# NaN in some lanes and not in others (measured: a finite but wrong minimum), while a sum is NaN or
# Inf whenever any value is, so a non-finite sum sends that tensor to the exact path (Fetcher).
REDUCTIONS = (("ReduceMin", "::min"), ("ReduceMax", "::max"), ("ReduceSum", "::sum"))


def expose(model: onnx.ModelProto, names: list[str], types: dict[str, int] | None = None,
           reduced=frozenset(), channels: dict[str, tuple[int, int]] | None = None,
           per_channel: dict[str, tuple[int, int]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``names`` (``types``: as in
    ``float_tensor_names``); a name in ``reduced`` (float32 tensors) is output as three scalars
    ``<name>::min``, ``<name>::max`` and ``<name>::sum`` instead (``REDUCTIONS``, ``Fetcher``).
    ``channels`` {float32 name: (axis, rank)}: each gets ``<name>::mean``, its mean over every
    axis but ``axis`` (one value per channel, ``channels.py``; a name only there gets nothing else), which
    stands in for ``::sum``: it is finite exactly when the sum is. ``per_channel`` {reduced name:
    (axis, rank)}: its ``::min`` and ``::max`` are vectors, one value per channel along ``axis``."""
    types = value_types(model) if types is None else types
    channels, per_channel = channels or {}, per_channel or {}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    after: dict[str, list] = {}
    named = set(names)
    whole = named - set(reduced)
    for name in list(names) + [n for n in channels if n not in named]:     # + the channels-only ones
        if name in whole:
            exposed.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        for op, suffix in REDUCTIONS if name in reduced else ():
            if suffix == "::sum" and name in channels:
                continue
            if name in per_channel and suffix != "::sum":
                node = _reduce_over(exposed, op, name, suffix, *per_channel[name], len(after))
            else:       # no axes: every axis, at every opset (opset 18 moved axes to an optional input)
                node = helper.make_node(op, [name], [name + suffix], keepdims=0,
                                        name=f"ganglion_calib{suffix}_{len(after)}")
            after.setdefault(name, []).append(node)
            exposed.graph.output.append(helper.make_tensor_value_info(
                name + suffix, onnx.TensorProto.FLOAT, None if name in per_channel else []))
        if name in channels:
            after.setdefault(name, []).append(_reduce_over(exposed, "ReduceMean", name, "::mean", *channels[name],
                                                           len(after)))
            exposed.graph.output.append(helper.make_tensor_value_info(name + "::mean", onnx.TensorProto.FLOAT, None))
    if after:
        # each reduction right after its producer: onnxruntime runs nodes in this order and frees
        # a tensor after its last reader, so one reduced at the end would keep every activation alive
        nodes = list(exposed.graph.node)
        del exposed.graph.node[:]
        exposed.graph.node.extend(n for name in (i.name for i in model.graph.input) for n in after.get(name, []))
        for node in nodes:
            exposed.graph.node.append(node)
            exposed.graph.node.extend(n for out in node.output for n in after.get(out, []))
    return exposed


def _reduce_over(exposed: onnx.ModelProto, op: str, name: str, suffix: str, axis: int, rank: int,
                 k: int) -> onnx.NodeProto:
    """``<name><suffix>``: ``op`` (ReduceMean/Min/Max) of ``name`` (of ``rank``) over every axis
    but ``axis``. Opset 18 moved their axes from an attribute to an input."""
    out, node_name = name + suffix, f"ganglion_calib{suffix}_{k}"
    axes = [a for a in range(rank) if a != axis]
    if not axes:                                     # a 1-D tensor is its own channel vector
        return helper.make_node("Identity", [name], [out], name=node_name)
    opset = next((o.version for o in exposed.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 18:
        return helper.make_node(op, [name], [out], axes=axes, keepdims=0, name=node_name)
    axes_name = f"ganglion_calib{suffix}_axes_{k}"
    exposed.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), axes_name))
    return helper.make_node(op, [name, axes_name], [out], keepdims=0, name=node_name)


# Basic-level onnxruntime rewrites that change values. WeightBiasQuantization (onnxruntime >= 1.21)
# quantizes a float Conv/Gemm weight read after a DequantizeLinear to *per-tensor* int8 and its bias
# to int32: in ``select``'s fake-quant graph every layer then met per-tensor weight rounding, which
# the per-channel int8 TFLite never makes (silero VAD: the scorer's model at 8 dB, the TFLite's 24).
# Unknown names are ignored, so older onnxruntime versions take the list as it is.
EXACT_REWRITES_OFF = ("WeightBiasQuantization",)


def make_session(model: onnx.ModelProto, *, in_order: bool = False, spin: bool = True, arena: bool | str = True,
                 qdq: bool = False):
    """An onnxruntime CPU session; load failures become ModelLoadError. ``in_order``: run the nodes
    in the graph's own order (onnxruntime's default order may defer a node that only feeds a graph
    output, such as ``Fetcher``'s reductions, and so keep every activation alive until the end:
    measured 700 MB instead of 280 MB on a 640x640 detector). ``spin=False``: idle intra-op
    threads sleep instead of spinning; a graph of many small single-threaded nodes (reductions)
    otherwise burns a second core waiting (measured: half the CPU time of a ReLU + min/max).
    ``arena=False``: memory goes back to the system when a run's tensors die, where an arena would
    keep its peak for the session's life. ``arena="shared"``: the process's one arena (``shared_arena``),
    which every session made so reuses: ``stages.Staged``'s sessions and ``auto``'s scorer hold the
    largest stage's tensors once between them, where each session's own arena would hold its own peak
    and no arena left glibc's heap to fragment (measured on PP-OCRv6 det at 640x640: 597 MB -> 423 MB
    over 8 samples, the same CPU time; ``MALLOC_MMAP_THRESHOLD_`` got there only for 40% more CPU).
    ``qdq=True``: a fake-quant graph (``select``'s scorer), run without ``EXACT_REWRITES_OFF``; the
    float passes keep onnxruntime's defaults (the rewrites concern Q/DQ graphs only)."""
    options = ort.SessionOptions()
    # Basic optimisations only: constant folding is harmless, but fusions could change values
    # we are about to observe, and every tensor is a graph output anyway (``EXACT_REWRITES_OFF``).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    if in_order:
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = bool(arena)
    if arena == "shared" and shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(EXACT_REWRITES_OFF) if qdq else None)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        older = _supported_ir_version(str(exc))
        if older is not None and older < model.ir_version:
            # onnx's helpers stamp the newest IR version, often newer than onnxruntime reads;
            # the graph itself rarely uses anything of the newer IR, so try the older stamp.
            retry = onnx.ModelProto()
            retry.CopyFrom(model)
            retry.ir_version = older
            return make_session(retry, in_order=in_order, spin=spin, arena=arena, qdq=qdq)
        raise ModelLoadError(f"onnxruntime cannot load the model for calibration: {exc}",
                             hint="check the model with 'ganglion inspect'; it must run in onnxruntime") from exc


@functools.cache
def shared_arena() -> bool:
    """Register the process's shared CPU arena with onnxruntime (once); False when it refuses.
    It grows by what each request needs (``arena_extend_strategy`` 1, kSameAsRequested), not by
    powers of two, and lives as long as the process: its size is the largest run's working set."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    try:
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    except Exception:  # noqa: BLE001 (onnxruntime's errors are not a public hierarchy; then no sharing)
        return False
    return True


def _supported_ir_version(message: str) -> int | None:
    match = re.search(r"max supported IR version: (\d+)", message)
    return int(match.group(1)) if match else None


def check_feeds(sample: dict, session, index: int, float_inputs=()) -> dict[str, np.ndarray]:
    """The sample's arrays for the session's inputs; missing names are a CalibrationDataError."""
    wanted = [i.name for i in session.get_inputs()] if session is not None else list(float_inputs)
    missing = [name for name in wanted if name not in sample]
    if missing:
        raise CalibrationDataError(
            f"calibration sample {index} has no value for input(s) {missing}",
            where=f"sample {index}", hint=f"the model's inputs are {wanted}; got {sorted(sample)}")
    return {name: sample[name] for name in wanted}


def collect_ranges(model: onnx.ModelProto, samples: Iterable[dict[str, np.ndarray]], *,
                   method: str = "minmax", progress: bool = True) -> dict[str, tuple[float, float]]:
    """Observed (lo, hi) for every float tensor (graph inputs, intermediates, outputs) by ONNX name.

    ``samples``: any iterable of feed dicts, read once (a generator streams them: nothing here
    holds more than one sample's activations). ``method`` names an observer in
    ``observers.OBSERVERS`` (``percentile:99.9`` passes an argument; ``auto`` chooses per
    group of tensors by output error, ``calibrate/select.py``; opt-in, see docs/quantization.md). Tensors that never
    held a finite value get no entry.
    """
    return collect_stats(model, samples, method=method, progress=progress, means=False).ranges


@dataclass
class CalibrationStats:
    """What the one float pass over the calibration samples found: ``ranges`` as
    ``collect_ranges`` returns them; ``means`` {(ONNX tensor, channel axis): mean per channel} of
    the layer inputs bias correction reads, ``channel_ranges`` {(ONNX tensor, channel axis): (min
    per channel, max per channel)} of BatchNormalization inputs (``channels.py``); ``count``: the
    samples seen."""
    ranges: dict[str, tuple[float, float]]
    means: dict[tuple[str, int], np.ndarray]
    count: int
    channel_ranges: dict = field(default_factory=dict)


def collect_stats(model: onnx.ModelProto, samples: Iterable[dict[str, np.ndarray]], *,
                  method: str = "minmax", progress: bool = True, means: bool = True,
                  view: select.Int8View | None = None) -> CalibrationStats:
    """``collect_ranges``' pass, which with ``means`` also gathers what the TFLite build would
    otherwise run its own float pass for: each layer input's channel means and, with the min/max
    observer, BatchNormalization inputs' per-channel ranges. ``view``: for ``auto``'s scorer
    (``select.Scorer``)."""
    observers.make(method)              # fail fast on a bad method name, before any work
    types = value_types(model)
    input_names, produced = float_tensor_names(model, types)
    observed = {n for n in input_names + produced if types.get(n) == onnx.TensorProto.FLOAT}
    axes = channel_axes(model, observed) if means else {}
    per_channel = range_axes(model, observed) if means and method == "minmax" else {}
    derived, same = {}, {}
    if method == "minmax":          # the other observers need every value
        derived = derive.derivable(model, observed - set(input_names), set(input_names + produced), set(per_channel))
    else:                           # ... but a copy's are its source's
        same = derive.copies(model, set(produced), set(input_names + produced), {o.name for o in model.graph.output})
    channel_means, channel_ranges = ChannelMeans(), ChannelRanges()
    found, kept, count = observe(model, samples, method, types, input_names,
                                 [p for p in produced if p not in derived and p not in same], progress,
                                 channels=axes, means=channel_means, per_channel=per_channel, ranges=channel_ranges)
    derive.fill(found, derived)
    found.update({name: found[source] for name, source in same.items()})
    if method == "auto":
        ranges = _auto(model, found, kept, input_names + produced, types, count, view)
        kept.close()
    else:
        ranges = {name: found[name].range() for name in input_names + produced if found[name].seen}
    masks.clip_addends(model, ranges)
    return CalibrationStats(ranges, channel_means.means(axes), count, channel_ranges.ranges(per_channel))


def observe(model, samples, method, types, input_names, produced, progress, channels=None, means=None,
            per_channel=None, ranges=None):
    """(observer by tensor after one streamed pass over ``samples``, a ``Kept`` of the first
    ``select.EVAL_SAMPLES`` samples when ``method`` is auto (else empty), the number of samples). ``channels`` {tensor: (axis, rank)}: their channel means go to ``means``
    (a ``ChannelMeans``); ``per_channel``, ``ranges``: as ``Fetcher`` takes them. One sample's
    activations are alive at a time; each observer keeps a running summary."""
    channels = channels or {}
    masked = masks.softmax_inputs(model)    # their fills are seen as int8 holds them (masks.py)
    # a graph whose nodes make no float tensor still has float inputs to observe
    fetch = (Fetcher(model, produced, types, reduce=method == "minmax", channels=channels, means=means,
                     per_channel=per_channel, ranges=ranges, whole=set(masked))
             if produced or channels else None)
    wanted = fetch.input_names if fetch else list(input_names)
    found = {name: observers.make(method) for name in input_names + produced}
    keep = select.EVAL_SAMPLES if method == "auto" else 0
    finals = [o.name for o in model.graph.output if o.name in set(produced)]
    # A re-iterable source (calibrate/samples.py) is read again when the scorer runs, instead of
    # holding its first samples: 32 inputs of a 640x640 detector are 157 MB.
    lazy = isinstance(samples, Sequence)
    kept, count = Kept(_Feeds(samples[:keep], wanted) if lazy else [], Spill() if keep else []), 0
    with bar(samples, progress, "calibrating", show_pos=True, show_eta=True) as items:
        for index, sample in enumerate(items):
            feeds = check_feeds(sample, None, index, wanted)
            for name in input_names:
                found[name].update(masks.saturate(feeds[name], *masked[name]) if name in masked else feeds[name])
            outputs = {}
            for name, value in fetch.items(feeds, index) if fetch else ():
                found[name].update(masks.saturate(value, *masked[name]) if name in masked else value)
                if index < keep and name in finals:
                    outputs[name] = value
            if index < keep:
                kept.references.append([outputs[name] for name in finals])
                if not lazy:
                    kept.feeds.append(feeds)
            del outputs
            count += 1
    if not count:
        raise CalibrationDataError("no calibration samples were given",
                                   hint="pass a .npy/.npz file or an image folder with --calib")
    return found, kept, count


@dataclass
class Kept:
    """What ``auto`` scores on: the feeds of the first samples (a lazy view of a re-iterable
    source, else a list) and their float graph outputs (in a ``samples.Spill``, read back when
    scored); iterates as (feeds, outputs) pairs."""
    feeds: Sequence
    references: list

    def __iter__(self):
        return zip(self.feeds, self.references)

    def __len__(self) -> int:
        return len(self.references)

    def close(self) -> None:
        if isinstance(self.references, Spill):
            self.references.close()


class _Feeds(Sequence):
    """The arrays of inputs ``names`` of each sample of ``samples``, read when reached (``Kept``;
    names, not the calibration session, which would keep its buffers alive)."""

    def __init__(self, samples: Sequence, names: list[str]):
        self.samples, self.names = samples, names

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return check_feeds(self.samples[index], None, index, self.names)

    def __iter__(self):
        for index, sample in enumerate(self.samples):
            yield check_feeds(sample, None, index, self.names)


class Fetcher:
    """One sample's values of the tensors ``names``: each whole, or with ``reduce`` (the min/max
    observer, which needs nothing else) each float32 tensor as ``[min, max]`` computed inside
    onnxruntime by ReduceMin/ReduceMax nodes appended to the graph. ``channels`` {tensor: (axis, rank)}:
    each of those tensors' channel means (``expose``) goes to ``means`` (a ``ChannelMeans``);
    ``per_channel`` (likewise): those reduced tensors' per-channel min and max go to ``ranges``
    (a ``ChannelRanges``), and their min and max are those vectors' (the same numbers). ``whole``:
    tensors fetched whole even so (a Softmax's input, whose mask fills ``masks.saturate`` reads).

    Reduced, a 640x640 detector hands Python 2 floats per tensor instead of ~250 MB of copied
    activations per sample, and onnxruntime reuses its buffers (280 MB peak instead of 890 MB with
    the whole data set loaded). The result is the same: min and max are exact in float32, and a
    tensor holding any NaN or Inf (its sum, or its channel means, not finite) or no value at all
    is fetched whole again for that sample, where the observer drops non-finite values as it
    always does."""

    def __init__(self, model: onnx.ModelProto, names: list[str], types: dict[str, int], reduce: bool,
                 channels: dict[str, tuple[int, int]] | None = None, means: ChannelMeans | None = None,
                 per_channel: dict[str, tuple[int, int]] | None = None, ranges: ChannelRanges | None = None,
                 whole: set[str] = frozenset()):
        self.names, self.types = names, types
        self.channels = dict(channels or {})
        self.means = ChannelMeans() if means is None else means
        self.reduced = {n for n in names if reduce and types.get(n) == onnx.TensorProto.FLOAT and n not in whole}
        self.per_channel = {n: v for n, v in (per_channel or {}).items() if n in self.reduced}
        self.ranges = ChannelRanges() if ranges is None else ranges
        self.outputs = [o for n in names for o in ([n + suffix for _, suffix in REDUCTIONS
                                                    if suffix != "::sum" or n not in self.channels]
                                                   if n in self.reduced else [n])]
        self.outputs += [n + "::mean" for n in self.channels]
        self.model = model if self.reduced else None     # for the exact fallback session, built when needed
        self.exact = None
        exposed = expose(model, names, types, reduced=self.reduced, channels=self.channels,
                         per_channel=self.per_channel)
        self.input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        # whole tensors (histograms) are fetched stage by stage, so they are not all alive at once
        self.staged = None if self.reduced else Staged(exposed, functools.partial(
            make_session, in_order=True, spin=False, arena="shared"))
        self.session = make_session(exposed, in_order=True, spin=False, arena="shared") if self.reduced else None

    def items(self, feeds: dict, index: int) -> Iterator[tuple[str, np.ndarray]]:
        """(name, value) of each tensor of ``names`` for one sample, as ``__call__`` gives them,
        one stage's at a time when the tensors are whole (``stages.py``)."""
        if self.staged is None:
            yield from zip(self.names, self(feeds, index))
            return
        wanted, means = set(self.names), {}
        for name, value in self.staged.stream(feeds, lambda session, names, f: _run(session, names, f, index)):
            if name in wanted:
                yield name, value
            elif name.endswith("::mean") and name[:-len("::mean")] in self.channels:
                means[name[:-len("::mean")]] = value
        self.means.update(means)

    def __call__(self, feeds: dict, index: int) -> list[np.ndarray]:
        values = _run(self.session, self.outputs, feeds, index)
        means = dict(zip(self.channels, values[len(values) - len(self.channels):]))
        self.means.update(means)
        values = iter(values)
        found, retry = [], []
        for k, name in enumerate(self.names):
            if name not in self.reduced:
                found.append(next(values))
                continue
            lo, hi = next(values), next(values)
            check = means[name] if name in self.channels else next(values)
            if name in self.per_channel:
                self.ranges.update(name, lo, hi)
                lo, hi = (lo.min(), hi.max()) if lo.size else (np.nan, np.nan)
            if not (np.isfinite([lo, hi]).all() and np.isfinite(check).all()):
                retry.append(k)
            found.append(np.array([lo, hi], np.float32))
        if retry:
            if self.exact is None:
                self.exact = make_session(expose(self.model, sorted(self.reduced), self.types))
            whole = _run(self.exact, [self.names[k] for k in retry], feeds, index)
            for k, value in zip(retry, whole):
                found[k] = value
        return found


def _auto(model, found: dict, kept: Kept, names, types, count: int, view=None) -> dict[str, tuple[float, float]]:
    """Ranges chosen by ``select.choose`` among every method's range of each float32 tensor
    (other float types keep min/max: QuantizeLinear's scale would have to match their type)."""
    ranges = {n: found[n].range() for n in names if found[n].seen}
    data = activations(model)
    choosable = [n for n in ranges if types.get(n) == onnx.TensorProto.FLOAT and n in data]
    if not kept or not kept.references[0] or not choosable:
        return ranges
    full, heldout = select.candidate_tables({n: found[n] for n in choosable})
    # nodes in graph order, idle threads asleep: the same outputs for half the CPU time of
    # onnxruntime's default (measured on YOLOv8n-640's fake-quant graph: 0.24 s instead of 0.55 s)
    scorer = select.Scorer(model, choosable, kept.feeds, kept.references,
                           functools.partial(make_session, in_order=True, spin=False, qdq=True, arena="shared"), view)
    chosen, _ = select.choose(heldout, choosable, scorer, final=full,
                              max_runs=select.budget(count, len(kept), len(full)))
    ranges.update(chosen)
    return ranges


SHAPE_OPS = frozenset({"Shape", "Size"})      # their outputs are static once shapes are pinned


def activations(model: onnx.ModelProto) -> set[str]:
    """Tensors whose values depend on the graph's inputs. The rest (Constant outputs, a Resize's
    scales computed from a Shape) are constants to TFLite; rounding them like activations would
    change the graph (a Resize scale of 2 rounded to 1.99 drops a row)."""
    initializers = {init.name for init in model.graph.initializer}
    found = {vi.name for vi in model.graph.input if vi.name not in initializers}
    for node in model.graph.node:
        if node.op_type not in SHAPE_OPS and any(i in found for i in node.input if i):
            found.update(o for o in node.output if o)
    return found


def _run(session, names: list[str], feeds: dict, index: int) -> list[np.ndarray]:
    try:
        return session.run(names, feeds)
    except Exception as exc:  # onnxruntime's errors are not a public hierarchy
        shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in feeds.items()}
        raise CalibrationDataError(
            f"onnxruntime failed on calibration sample {index}: {exc}", where=f"sample {index}",
            hint=f"the sample holds {shapes}; it must match the model's input shapes and dtypes") from exc
