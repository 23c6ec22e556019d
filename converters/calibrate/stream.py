"""Streaming models: calibrate from a recorded sequence, feeding the recurrent state back.

A streaming model (a voice-activity detector, a keyword spotter, a streaming recognizer) takes
its own previous state as an input and returns the next one: ``state -> [model] -> stateN``, and
the caller feeds ``stateN`` back as the next call's ``state``. Random or zero states calibrate it
badly (a real state has the statistics the recurrence gives it), so calibration data for such a
model is a *recording*: the non-state inputs only, one time step per sample, in time order. The
float model is run step by step in onnxruntime from a zero state, and each step's sample gets the
state the previous step produced; those samples are what calibration (and verify) then use.

    state_pairs(model, specs, present, explicit) -> [(output, input)]   which outputs feed which inputs
    unroll(model, steps, pairs, *, limit=None) -> [sample]             the steps with their states
    candidate_pairs(model, specs, taken) -> [(output, input)]         outputs that fit inputs
    recorded_pairs(model, steps, candidates) -> [(output, input)]     states a recording already holds
    recurrence(model, pairs) -> {node}                                 the nodes from each state to its next

Pairs come from ``--state OUT=IN`` (repeatable) or are found automatically for every input that
the data does not hold: the output of the same dtype and shape (the one whose name is closest,
when several fit). An input that the data lacks and no output fits stays missing (the loader's
error names it). A recording may also hold the states themselves (the float model's own, as a
zoo's ``calib.npz`` does): ``recorded_pairs`` finds those by running the float model over its first
steps.

The nodes on a path from a state input to its state output (``recurrence``) are the recurrence
itself. When an exporter writes an LSTM cell out as Gemm/Sigmoid/Tanh/Mul nodes (silero VAD's op18
export) they would run int8 like any layer, and the rounded cell state drifts call after call; the
converter keeps them float, as it keeps an ONNX LSTM/GRU/RNN (``--int8-recurrent`` rounds both).
Measured on that export (zoo3 holdout, closed loop): 20.8 -> 37.2 dB, speech agreement 0.98 -> 1.0
(0.940 -> 0.996 over 500 calls).
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import onnx

from converters.calibrate import runner
from converters.calibrate.data import TensorSpec
from converters.errors import CalibrationDataError
from converters.frontend.names import node_names
from core.errors import UsageError

STATE_HINT = "name the pairs with --state OUTPUT=INPUT (repeatable), e.g. --state stateN=state"


def parse_state(text: str) -> tuple[str, str]:
    """'stateN=state' -> ('stateN', 'state'): graph output OUT is fed back as input IN."""
    out, sep, inp = text.partition("=")
    if not sep or not out.strip() or not inp.strip():
        raise UsageError(f"cannot read state pair {text!r}", where="--state", hint=STATE_HINT)
    return out.strip(), inp.strip()


def _outputs(model: onnx.ModelProto) -> dict[str, tuple[int, tuple]]:
    """Graph output name -> (ONNX element type, shape with None for unknown dims)."""
    found = {}
    for vi in model.graph.output:
        tensor = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tensor.shape.dim)
        found[vi.name] = (tensor.elem_type, shape)
    return found


def state_pairs(model: onnx.ModelProto, specs: Sequence[TensorSpec], present: set[str] | None,
                explicit: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(output, input) pairs: the ``explicit`` ones (checked), then one per input that ``present``
    (the arrays the data holds; None: unknown, e.g. a .npy) lacks and an output fits."""
    outputs = _outputs(model)
    inputs = {s.name: s for s in specs}
    input_types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    problems = [f"{o!r} is not a graph output (outputs: {', '.join(outputs)})" for o, _ in explicit if o not in outputs]
    problems += [f"{i!r} is not a graph input (inputs: {', '.join(inputs)})" for _, i in explicit if i not in inputs]
    if not problems:
        problems = [f"output {o!r} {list(outputs[o][1])} cannot feed input {i!r} {list(inputs[i].shape)}"
                    for o, i in explicit if not _fits(outputs[o], input_types[i], inputs[i].shape)]
    if problems:
        raise UsageError("--state: " + "; ".join(problems), where="--state", hint=STATE_HINT)
    pairs = list(explicit)
    if present is None or len(inputs) < 2:
        return pairs
    taken = {o for o, _ in pairs} | {i for _, i in pairs}
    for name, spec in inputs.items():
        if name in present or name in taken:
            continue
        fits = [o for o, info in outputs.items() if o not in taken and _fits(info, input_types[name], spec.shape)]
        chosen = _closest(name, fits)
        if chosen is not None:
            pairs.append((chosen, name))
            taken |= {chosen, name}
    return pairs


def _fits(output: tuple[int, tuple], elem_type: int, shape: tuple) -> bool:
    out_type, out_shape = output
    return out_type == elem_type and len(out_shape) == len(shape) and all(
        a is None or b is None or a == b for a, b in zip(out_shape, shape))


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate whose name is closest to ``name``; None when none, or when two tie."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    scored = sorted(((difflib.SequenceMatcher(None, name, c).ratio(), c) for c in candidates), reverse=True)
    if scored[0][0] == scored[1][0]:
        raise CalibrationDataError(
            f"the data has no array for input {name!r}, and outputs {candidates} could all be its state",
            where=f"input {name!r}", hint=STATE_HINT + f"; or add an array named {name!r} to the data")
    return scored[0][1]


def unroll(model: onnx.ModelProto, steps: list[dict[str, np.ndarray]], pairs: Sequence[tuple[str, str]], *,
           limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Each step with its state inputs filled by running the float model from a zero state.

    ``limit``: keep that many samples, evenly spread over the sequence (the state of the first
    steps is still near its zero start, so the first N alone would under-represent it)."""
    specs = {vi.name: vi for vi in model.graph.input}
    state = {inp: _zeros(specs[inp]) for _, inp in pairs}
    session = runner.make_session(model)
    wanted = [out for out, _ in pairs]
    samples = []
    for index, step in enumerate(steps):
        sample = {**step, **state}
        feeds = runner.check_feeds(sample, session, index)
        try:
            values = session.run(wanted, feeds)
        except Exception as exc:  # onnxruntime's errors are not a public hierarchy
            raise CalibrationDataError(f"onnxruntime failed on step {index} of the sequence: {exc}",
                                       where=f"step {index}", hint="check the recording's shapes and dtypes") from exc
        samples.append(sample)
        state = {inp: np.asarray(value) for (_, inp), value in zip(pairs, values)}
    if limit is not None and len(samples) > limit:
        keep = np.unique(np.linspace(0, len(samples) - 1, limit).round().astype(int))
        samples = [samples[i] for i in keep]
    return samples


def _zeros(vi: onnx.ValueInfoProto) -> np.ndarray:
    tensor = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor.shape.dim]
    return np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))


RECORDED_STEPS = 8          # steps of a recording run to see whether it holds the float states
FOLLOWS = 0.75              # share of those steps (restarts from zero aside) whose state must match


def candidate_pairs(model: onnx.ModelProto, specs: Sequence[TensorSpec],
                    taken: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(output, input) pairs that could be a state fed back: the output fits the input (dtype and
    shape). Names in ``taken`` are left out."""
    used = {o for o, _ in taken} | {i for _, i in taken}
    outputs = _outputs(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    return [(o, s.name) for s in specs if s.name not in used
            for o, info in outputs.items() if o not in used and _fits(info, types[s.name], s.shape)]


def recorded_pairs(model: onnx.ModelProto, steps: Sequence[dict[str, np.ndarray]],
                   candidates: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``candidates`` (``candidate_pairs``) whose input, in the consecutive ``steps`` (the
    first ``RECORDED_STEPS``), holds the output's float value of the step before: a recording of
    the float model's own states. An all-zero state is a restart (a new clip) and is not counted.
    The model runs step by step and stops when every candidate has missed twice (an image model
    whose output merely has its input's shape costs two or three runs)."""
    steps = list(steps[:RECORDED_STEPS])
    if len(steps) < 3 or not candidates:
        return []
    session = runner.make_session(model)
    wanted = sorted({o for o, _ in candidates})
    hits = {pair: [] for pair in candidates}
    for k, (step, after) in enumerate(zip(steps, steps[1:])):
        made = dict(zip(wanted, session.run(wanted, runner.check_feeds(step, session, k))))
        for (out, inp), seen in hits.items():
            if np.any(after[inp]):
                seen.append(_same(after[inp], made[out]))
        if all(seen.count(False) >= 2 for seen in hits.values()):
            break
    pairs: list[tuple[str, str]] = []
    for (out, inp), seen in hits.items():
        if len(seen) >= 2 and np.mean(seen) >= FOLLOWS and out not in {o for o, _ in pairs} \
                and inp not in {i for _, i in pairs}:
            pairs.append((out, inp))
    return pairs


def _same(given, made) -> bool:
    given, made = np.asarray(given), np.asarray(made)
    return given.size == made.size and bool(np.allclose(given, made.reshape(given.shape), rtol=1e-4, atol=1e-6))


def recurrence(model: onnx.ModelProto, pairs: Sequence[tuple[str, str]]) -> set[str]:
    """Names (``frontend.names``) of the nodes on a path from a pair's state input to its output."""
    names = node_names(model)
    found: set[str] = set()
    for out, inp in pairs:
        after, before = {inp}, {out}
        for node in model.graph.node:
            if any(i in after for i in node.input):
                after.update(node.output)
        for node, name in reversed(list(zip(model.graph.node, names))):
            if any(o in before for o in node.output):
                before.update(i for i in node.input if i)
                if any(o in after for o in node.output):
                    found.add(name)
    return found
