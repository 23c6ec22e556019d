"""Histogram counts of one large update from a strided subset of its values, tails exact.

Binning every value of every activation (a multiply, an add, a cast and a scatter per value) was
40% of a 640x640 detector's conversion with ``auto`` (100 samples, 240 MB of activations each).
The ranges read from the histogram are cuts far in its tails (percentile 99.999: one value in
10^5), so ``sampled_counts`` bins the bulk from every ``stride``-th value, each counted
``stride`` times, and the tails from every value: a value beyond the bulk's bounds (the
histogram's 0.1% quantiles so far, with a margin of a bin) is picked by two comparisons, which
cost a fraction of binning it. Bins in a tail thus hold exact counts; bins inside hold unbiased
estimates whose error the clipping cuts never read.

The stride is prime, so it does not follow a power-of-two row or channel length (which would
sample the same columns of every row), and its offset moves with the update number, so
successive samples cover different positions.
"""
from __future__ import annotations

import numpy as np

TAIL = 1e-3        # each side's share of the counts so far that is binned exactly (>> 1e-4, the widest cut)


def sampled_counts(h, flat: np.ndarray, limit: int, call: int) -> np.ndarray:
    """Counts per bin of ``h`` (a ``histogram.RunningHistogram`` whose grid covers ``flat``) for
    ``flat``: the bulk from about ``limit`` values, the tails (``tail_bins``) exact."""
    stride = prime_at_least(-(-flat.size // limit))
    counts = h.binned(flat[call % stride::stride]) * stride
    first, last = tail_bins(h.counts)
    counts[:first] = 0
    counts[last:] = 0
    width = 2.0 * h.radius / h.bins
    below, above = -h.radius + (first + 1) * width, -h.radius + (last - 1) * width    # a bin's margin
    picked = flat[(flat < below) | (flat > above)]
    if picked.size:
        tails = h.binned(picked)
        counts[:first] += tails[:first]
        counts[last:] += tails[last:]
    return counts


def tail_bins(counts: np.ndarray) -> tuple[int, int]:
    """(first, last): bins below ``first`` hold the lowest ``TAIL`` of ``counts``, bins from
    ``last`` on the highest."""
    cdf = np.cumsum(counts)
    total = cdf[-1]
    if not total:
        return 0, counts.size
    first = int(np.searchsorted(cdf, TAIL * total, side="left"))
    last = int(np.searchsorted(cdf, (1.0 - TAIL) * total, side="right")) + 1
    return first, max(min(last, counts.size), first)


def prime_at_least(n: int) -> int:
    while n > 2 and any(n % d == 0 for d in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n
