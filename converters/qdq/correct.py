"""Bias correction for the QDQ target: undo the mean output shift that weight rounding causes.

Rounding a weight channel to int8 adds an error E = dequant(quant(W)) - W. For an input whose
channels have mean m (over the calibration samples), the layer's output then moves on average by
E . m per output channel -- a fixed offset, large for inputs with large means such as ReLU
outputs. Subtracting it from the bias (b' = b - E . m) removes the offset; the TFLite path does the
same (converters/tflite/quantize.py, with means measured in LiteRT), here the means come from the
float ONNX graph in onnxruntime.

    input_means(model, samples, nodes) -> {tensor name: per-channel mean (float64)}
    apply(graph, means, nodes)         corrects (or adds) the bias initializers in place

One rule for every layer: the shift of output channel o, averaged over all output positions, is
sum over input channels c and kernel taps k of E[o, c, k] times the mean input value tap k reads
(``window``, zero padding included). Covered:

    Conv           (any rank, groups, depthwise) each output position reads every tap once
    ConvTranspose  (explicit pads or VALID, groups) each input pixel is spread over every tap, so
                   the window sums the input pixels whose tap lands inside the output and
                   divides by the output positions; output_shape / SAME auto_pad are left alone
    Gemm           with alpha = beta = 1 and transA = 0: the window is the input's column means
    MatMul         with a 2-D weight: the same, the bias being the constant of the one Add that
                   reads the MatMul (how exporters write Linear on 3-D inputs); a MatMul without
                   such an Add has no bias to correct
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from converters.calibrate.runner import check_feeds, expose, make_session
from converters.geometry import auto_pads
from converters.qdq import fold, ops, params


CORRECTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def correctable(node, inits: dict) -> bool:
    """Does ``node`` have a float weight initializer whose rounding we know how to correct?"""
    if node.op_type not in CORRECTED or len(node.input) < 2 or node.input[1] not in inits \
            or node.input[0] in inits:
        return False
    if inits[node.input[1]].data_type != onnx.TensorProto.FLOAT:
        return False
    if node.op_type == "MatMul":
        return len(inits[node.input[1]].dims) == 2      # batched weights are quantized per tensor
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if attrs.get("transA") is not None and attrs["transA"].i:
            return False
        if any(name in attrs and attrs[name].f != 1.0 for name in ("alpha", "beta")):
            return False
        if len(node.input) > 2 and node.input[2] and node.input[2] in inits \
                and numpy_helper.to_array(inits[node.input[2]]).ndim != 1:
            return False          # a 2-D C is not a per-channel bias
    return True


def input_means(model: onnx.ModelProto, samples: list[dict], nodes: list) -> dict[str, np.ndarray]:
    """Mean of the first input of each of ``nodes`` over ``samples`` and the batch: a Conv input
    keeps its spatial shape ([C, *spatial]: the correction needs the border pixels, where zero
    padding enters the window), a Gemm input is one value per column ([K]). ``model`` runs in
    onnxruntime with those tensors exposed."""
    inputs = {vi.name for vi in model.graph.input}
    names = sorted({n.input[0] for n in nodes})
    if not names or not samples:
        return {}
    exposed = [n for n in names if n not in inputs]
    session = make_session(expose(model, exposed)) if exposed else None
    sums: dict[str, np.ndarray] = {}
    for index, sample in enumerate(samples):
        feeds = check_feeds(sample, session, index, sorted(inputs))
        values = dict(zip(exposed, session.run(exposed, feeds))) if session else {}
        values.update({k: v for k, v in feeds.items() if k in names})
        for name in names:
            v = np.asarray(values[name])
            if v.ndim < 2:
                continue
            if name not in sums:
                sums[name] = np.zeros(v.shape[1:], np.float32)
            # in place and in float32 (the loop is memory-bound; a sum of a few hundred samples
            # keeps ~1e-5 relative precision, far below the int8 rounding it corrects)
            np.add(sums[name], v[0] if len(v) == 1 else v.mean(axis=0), out=sums[name])
    return {name: s.astype(np.float64) / len(samples) for name, s in sums.items()}


def apply(graph: onnx.GraphProto, means: dict[str, np.ndarray], nodes: list) -> int:
    """Correct the bias of every node in ``nodes`` whose input mean is known; returns how many."""
    inits = {i.name: i for i in graph.initializer}
    users = fold.use_counts(graph)
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    done = 0
    for node in nodes:
        if node.input[0] not in means or not correctable(node, inits):
            continue
        # where the bias lives: the node's own input 2, or (MatMul) the constant of its one Add
        holder, index = (node, 2) if node.op_type != "MatMul" else _bias_add(node, inits, readers, outputs)
        if holder is None:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        axis = ops.WEIGHT_AXIS[node.op_type][1](node)
        shift = _shift(node, w, axis, means[node.input[0]])
        if shift is None:
            continue
        _set_bias(graph, holder, index, inits, users, shift)
        done += 1
    return done


def _bias_add(node, inits: dict, readers: dict, outputs: set) -> tuple[object, int] | tuple[None, None]:
    """(the Add that adds a constant [N] bias to this MatMul's output, that constant's input
    index), when the MatMul output goes to that Add alone."""
    out = node.output[0]
    users = readers.get(out, [])
    if out in outputs or len(users) != 1 or users[0].op_type != "Add" or len(users[0].input) != 2:
        return None, None
    add = users[0]
    index = 1 if add.input[0] == out else 0
    const = inits.get(add.input[index])
    n = inits[node.input[1]].dims[1]
    if add.input[1 - index] != out or const is None or const.data_type != onnx.TensorProto.FLOAT:
        return None, None
    dims = list(const.dims)
    if not dims or dims[-1] != n or int(np.prod(dims)) != n:
        return None, None                  # not one value per output column
    return add, index


def _shift(node, w: np.ndarray, axis: int, mean: np.ndarray) -> np.ndarray | None:
    """Per output channel, E . mean for the rounding error E of the int8 weights."""
    q, p = params.weight(w, axis if w.ndim >= 2 else None)
    scale = np.asarray(p.scale, np.float64)
    if scale.ndim:
        shape = [1] * w.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    error = q.astype(np.float64) * scale - w.astype(np.float64)
    if node.op_type in ("Gemm", "MatMul"):      # B [K, N], or [N, K] with transB
        mean = mean.reshape(-1) if mean.ndim == 1 else mean.mean(axis=tuple(range(mean.ndim - 1)))
        if w.ndim != 2:
            return None
        error = error if axis % 2 == 1 else error.T
        return mean @ error if error.shape[0] == len(mean) else None
    if node.op_type == "ConvTranspose":          # W [C, M/g, k...] -> the Conv layout [M, C/g, k...]
        window = _transpose_window(node, mean, w.shape[2:])
        error = _transpose_weight(error, _attrs(node).get("group", 1))
    else:
        window = _window_means(node, mean, w.shape[2:])     # [C, *kernel]
    if window is None or error is None:
        return None
    out, per_group = error.shape[0], error.shape[1]     # [M, C/g, k...]
    channels = window.shape[0]
    if channels % per_group or out % (channels // per_group):
        return None
    groups = channels // per_group
    reads = window.reshape(groups, per_group, -1)[np.arange(out) // (out // groups)]   # [M, C/g, k]
    return (error.reshape(out, per_group, -1) * reads).sum(axis=(1, 2))


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _transpose_weight(error: np.ndarray, groups: int) -> np.ndarray | None:
    """ConvTranspose W [C, M/g, k...] as Conv's [M, C/g, k...]: output channel g*(M/g)+j reads
    the input channels of group g through W[c, j]."""
    c, per_out = error.shape[:2]
    if c % groups:
        return None
    e = error.reshape(groups, c // groups, per_out, *error.shape[2:])
    return np.moveaxis(e, 2, 1).reshape(groups * per_out, c // groups, *error.shape[2:])


def _transpose_window(node, mean: np.ndarray, kernel: tuple) -> np.ndarray | None:
    """For each input channel and tap of a ConvTranspose, the mean value it adds to an output
    position, averaged over the output: input pixel i reaches output i*s + k*d - pad_begin, so tap
    k adds the sum of the pixels landing inside [0, out), spread over every output position."""
    spatial, n = mean.shape[1:], len(kernel)
    attrs = _attrs(node)
    if len(spatial) != n or not spatial or "output_shape" in attrs:
        return None
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        return None
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = list(attrs.get("pads", [0] * 2 * n)) if auto == "NOTSET" else [0] * 2 * n
    extra = list(attrs.get("output_padding", [0] * n))
    outs = [strides[i] * (spatial[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[i + n]
            for i in range(n)]
    if min(outs) < 1:
        return None
    window = np.zeros((mean.shape[0], *kernel))
    for tap in np.ndindex(*kernel):
        index = []
        for i in range(n):                     # pixels p with 0 <= p*s + tap*d - pad < out
            offset = tap[i] * dilations[i] - pads[i]
            lo = max(0, -(offset // strides[i]))
            hi = min(spatial[i] - 1, (outs[i] - 1 - offset) // strides[i])
            index.append(slice(lo, max(lo, hi + 1)))
        window[(slice(None), *tap)] = mean[(slice(None), *index)].reshape(mean.shape[0], -1).sum(axis=1)
    return window / float(np.prod(outs))


def _window_means(node, mean: np.ndarray, kernel: tuple) -> np.ndarray | None:
    """For each input channel and kernel tap, the mean input value that tap reads, averaged over
    every output position: the mean image, zero-padded as the Conv pads it, sliced with the
    Conv's strides and dilations. (With it, E . window is the exact mean output shift.)"""
    spatial = mean.shape[1:]
    if len(spatial) != len(kernel) or not spatial:
        return None
    attrs = {a.name: a for a in node.attribute}
    n = len(kernel)
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * n
    dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * n
    pads = _pads(attrs, spatial, kernel, strides, dilations)
    padded = np.pad(mean, [(0, 0)] + [(pads[i], pads[i + n]) for i in range(n)])
    outs = [(padded.shape[1 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n)]
    if min(outs) < 1:
        return None
    window = np.empty((mean.shape[0], *kernel))
    for tap in np.ndindex(*kernel):
        index = tuple(slice(tap[i] * dilations[i], tap[i] * dilations[i] + (outs[i] - 1) * strides[i] + 1,
                            strides[i]) for i in range(n))
        window[(slice(None), *tap)] = padded[(slice(None), *index)].reshape(mean.shape[0], -1).mean(axis=1)
    return window


def _pads(attrs: dict, spatial, kernel, strides, dilations) -> list[int]:
    """ONNX Conv pads [begin..., end...], explicit or from auto_pad."""
    n = len(kernel)
    auto = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return auto_pads(auto, spatial, kernel, strides, dilations)
    if auto == "VALID" or "pads" not in attrs:
        return [0] * (2 * n)
    return list(attrs["pads"].ints)


def _set_bias(graph, node, index: int, inits: dict, users: dict, shift: np.ndarray) -> None:
    """Subtract ``shift`` from the bias ``node`` reads at input ``index`` (added when missing)."""
    has_bias = len(node.input) > index and node.input[index]
    if has_bias and node.input[index] not in inits:
        return                                   # a computed bias: nothing to rewrite
    old = numpy_helper.to_array(inits[node.input[index]]) if has_bias else np.zeros(len(shift), np.float32)
    corrected = (old.astype(np.float64) - shift.reshape(old.shape)).astype(np.float32)
    if has_bias and users.get(node.input[index], 0) == 1:
        inits[node.input[index]].CopyFrom(numpy_helper.from_array(corrected, node.input[index]))
        return
    # a bias shared with another node (or none yet) gets its own initializer
    taken = {i.name for i in graph.initializer}
    name, k = f"{node.name or node.output[0]}_corrected_bias", 1
    while name in taken:
        name, k = f"{node.name or node.output[0]}_corrected_bias_{k}", k + 1
    graph.initializer.append(numpy_helper.from_array(corrected, name))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = name
