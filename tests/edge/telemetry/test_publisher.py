"""Publisher logic with an in-memory client (a unit test of logic; the real broker runs in the
scenario tests): window bound, order, holding new records after an outage, early PUBACKs, poison."""
import itertools
import threading
import time

from edge.telemetry.errors import PublishError
from edge.telemetry.publisher import Publisher
from edge.telemetry.spool import Spool


class FakeClient:
    """Records publishes; the test decides when PUBACKs arrive (through publisher.on_publish)."""

    def __init__(self, publisher, *, ack_inline=False, poison=()):
        self.publisher, self.ack_inline, self.poison = publisher, ack_inline, set(poison)
        self.connected = True
        self.sent = []                 # (mid, seq)
        self._mids = itertools.count(1)
        self.lock = threading.Lock()

    def publish(self, topic, payload, qos=1, retain=False):
        seq = int(payload)
        if seq in self.poison:
            raise PublishError("payload too large", where=topic)
        mid = next(self._mids)
        with self.lock:
            self.sent.append((mid, seq))
        if self.ack_inline:            # the PUBACK beats publish() returning (paho's thread is fast)
            self.publisher.on_publish(mid, True)
        return mid

    def ack_all(self):
        with self.lock:
            pending, self.sent = self.sent, []
        for mid, _ in pending:
            self.publisher.on_publish(mid, True)
        return [seq for _, seq in pending]


def make(tmp_path, n, window=8, **kw):
    spool = Spool(tmp_path / "s.db")
    for _ in range(n):
        spool.append("t", lambda seq: str(seq).encode())
    pub = Publisher(spool, window=window)
    pub.client = FakeClient(pub, **kw)
    return spool, pub


def wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def test_window_bounds_in_flight_and_order_is_kept(tmp_path):
    spool, pub = make(tmp_path, 30, window=8)
    pub.start()
    try:
        delivered = []
        while len(delivered) < 30:
            assert wait(lambda: pub.client.sent)
            time.sleep(0.02)
            assert len(pub.client.sent) <= 8
            delivered += pub.client.ack_all()
        assert delivered == list(range(1, 31))
        assert pub.flush(5) and spool.stats()["depth"] == 0
    finally:
        pub.stop()


def test_after_an_outage_new_records_wait_for_the_old_in_flight_ones(tmp_path):
    spool, pub = make(tmp_path, 5, window=8)
    pub.start()
    try:
        assert wait(lambda: len(pub.client.sent) == 5)
        pub.client.connected = False
        pub.on_disconnect("broker gone")
        for _ in range(5):
            spool.append("t", lambda seq: str(seq).encode())
        pub.client.connected = True
        pub.on_connect()              # paho now re-sends 1..5 itself; 6..10 must not overtake them
        time.sleep(0.3)
        assert [seq for _, seq in pub.client.sent] == [1, 2, 3, 4, 5]
        pub.client.ack_all()
        assert wait(lambda: [seq for _, seq in pub.client.sent] == [6, 7, 8, 9, 10])
        pub.client.ack_all()
        assert pub.flush(5)
        assert pub.counters["reconnects"] == 1
    finally:
        pub.stop()


def test_pubacks_that_beat_the_bookkeeping_are_not_lost(tmp_path):
    spool, pub = make(tmp_path, 50, window=4, ack_inline=True)
    pub.start()
    try:
        assert pub.flush(5) and pub.counters["acked"] == 50 and pub.inflight == 0
    finally:
        pub.stop()


def test_a_record_paho_refuses_is_dropped_and_counted_not_retried_forever(tmp_path):
    spool, pub = make(tmp_path, 6, window=8, ack_inline=True, poison={3})
    pub.start()
    try:
        assert pub.flush(5)
        assert pub.counters["rejected"] == 1 and pub.counters["acked"] == 5
    finally:
        pub.stop()


def test_unacked_records_stay_in_the_spool_when_stopped(tmp_path):
    spool, pub = make(tmp_path, 10, window=4)
    pub.start()
    assert wait(lambda: len(pub.client.sent) == 4)
    pub.client.ack_all()
    assert wait(lambda: len(pub.client.sent) == 4)
    pub.stop()
    assert [r.seq for r in spool.read(limit=100)] == list(range(5, 11))
