"""The calibration pass's own memory (calibrate/runner.py): what ``auto`` keeps to score on."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.calibrate import collect_ranges, runner, select
from tests.converters.calibrate.test_select import mlp, outlier_batches


class _Lazy(Sequence):
    """A re-iterable source that counts its reads, as calibrate/samples.py's Samples is."""

    def __init__(self, items, reads):
        self.items, self.reads = items, reads

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return _Lazy(self.items[index], self.reads)
        return self.items[index]

    def __iter__(self):
        for item in self.items:
            self.reads.append(1)
            yield dict(item)


def test_auto_reads_its_scoring_feeds_again_from_a_lazy_source():
    m = mlp(rows=256)
    calib = outlier_batches(40, 6, True)
    reads = []
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    _, kept, _ = runner.observe(m, _Lazy(calib, reads), "auto", types, inputs, produced, False)
    assert len(reads) == 40 and len(kept) == select.EVAL_SAMPLES
    assert not isinstance(kept.feeds, list)                 # a view, not the arrays
    feeds = [f for f, _ in kept]
    assert len(reads) == 40 + select.EVAL_SAMPLES
    assert all(np.array_equal(f["x"], c["x"]) for f, c in zip(feeds, calib))
    assert collect_ranges(m, _Lazy(calib, []), method="auto", progress=False) == \
        collect_ranges(m, calib, method="auto", progress=False)


def test_auto_spills_the_reference_outputs_and_reads_them_back():
    m = mlp(rows=256)
    calib = outlier_batches(12, 6, False)
    types = runner.value_types(m)
    inputs, produced = runner.float_tensor_names(m, types)
    _, kept, _ = runner.observe(m, calib, "auto", types, inputs, produced, False)
    assert not isinstance(kept.references, list) and kept.references.end > 0       # on disk, not held
    finals = [o.name for o in m.graph.output]
    for (feeds, refs), sample in zip(kept, calib):
        np.testing.assert_array_equal(refs[0], runner.make_session(m).run(finals, sample)[0])
    kept.close()
