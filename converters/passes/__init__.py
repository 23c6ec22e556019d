"""Graph passes. Each module has ``run(graph) -> bool`` (True when it changed the graph).

``PIPELINE`` is the one ordered list of passes the TFLite backend runs; order matters:
constants first (so later passes see plain constants), then clean-ups and fusions that remove
nodes, then the layout decision on the final set of nodes.
"""
from __future__ import annotations

from converters.ir import Graph
from converters.passes import (additive_mask, convert_layout, decompose_einsum, drop_identity,
                               fold_constants, fuse_activation, fuse_bias_add, fuse_conv_bn, fuse_gelu,
                               fuse_normalization, fuse_softmax, onehot_gather, sink_views)

PIPELINE = (
    decompose_einsum,  # Einsum -> Transpose/Reshape/MatMul (TFLite has no einsum)
    fold_constants,    # Shape/Gather/Concat chains, weight preprocessing -> constants
    drop_identity,     # Identity / Dropout are no-ops at inference
    onehot_gather,     # MatMul(Cast(Equal(ids, arange K)), table) -> Gather(table, ids)
    additive_mask,     # scores + Where(pad, -inf, 0) -> Where(pad, -inf, scores)
    sink_views,        # Add(Squeeze(conv), b) / Relu(Squeeze(.)) -> Squeeze(...): the bias meets its Conv
    fuse_conv_bn,      # BN into Conv/Gemm weights, else Mul + Add
    fuse_bias_add,     # Conv/Gemm + Add(per-channel constant) -> the op's bias
    fuse_gelu,         # x * 0.5 * (1 + erf(x / sqrt 2)) -> Gelu (one TFLite GELU op)
    fuse_normalization,  # written-out LayerNorm / RMSNorm / GroupNorm statistics -> ganglion::Normalize
    fuse_softmax,      # Exp(x - max) / ReduceSum(Exp(x - max)) -> Softmax
    fuse_activation,   # Relu / Clip(0,6) / Clip(-1,1) into the producer's fused activation
    convert_layout,    # NCHW -> NHWC once; transposes only at graph I/O
)


def run_pipeline(graph: Graph, passes=PIPELINE) -> Graph:
    for p in passes:
        p.run(graph)
    return graph
