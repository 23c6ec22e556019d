"""Property: whatever bytes arrive on an input (MQTT payload, dropped file), the daemon answers
exactly once -- a result or a typed error -- and keeps running. Real daemon, real LiteRT worker."""
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.edge.daemon.helpers import Collector, make_daemon

pytestmark = pytest.mark.timeout(180)


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


payloads = st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=16, max_size=16),                               # exactly the raw input size
    st.builds(lambda b: b"\x93NUMPY" + b, st.binary(max_size=100)),   # npy magic, garbage after
    st.builds(lambda b: b"\x89PNG\r\n\x1a\n" + b, st.binary(max_size=100)),
    st.builds(lambda b: b"\xff\xd8\xff" + b, st.binary(max_size=100)),
    st.builds(lambda v: json.dumps(v).encode(), st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.sampled_from(["inputs", "input", "x"]), c,
                                                             max_size=3), max_leaves=12)),
    st.builds(lambda shape: _npy(np.zeros(shape, np.float32)),
              st.lists(st.integers(0, 5), min_size=0, max_size=3)),
)


@pytest.fixture(scope="module")
def daemon(model_dir):
    d, _ = make_daemon(model_dir / "dense.tflite")
    d.start()
    yield d
    d.stop()
    d.shutdown()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_any_payload_gets_exactly_one_answer(daemon, payload):
    got = Collector()
    pid = daemon.pool.slots[0].pid
    daemon.submit("mqtt:in", payload, {}, got.cb(0))
    assert got.wait(1, timeout=10) and got.duplicates == 0
    r = got.results[0]
    if not r.ok:
        assert r.error["code"].startswith(("input.", "usage.")), r.error
    else:
        assert r.outputs["y"].shape[1:] == (3,)
    assert daemon.pool.slots[0].pid == pid                      # the worker never crashed
