"""The SQLite spool on a real file: order, persistence across reopen, acks, bounds, overflow count."""
import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.telemetry.errors import SpoolError
from edge.telemetry.spool import Spool


def payload(seq):
    return json.dumps({"seq": seq}).encode()


def test_records_come_back_in_order_with_their_own_seq(tmp_path):
    spool = Spool(tmp_path / "s.db")
    seqs = [spool.append("t/a" if i % 2 else "t/b", payload) for i in range(50)]
    assert seqs == list(range(1, 51))
    got = spool.read(after=0, limit=100)
    assert [r.seq for r in got] == seqs
    assert all(json.loads(r.payload)["seq"] == r.seq for r in got)
    assert [r.seq for r in spool.read(after=20, limit=5)] == [21, 22, 23, 24, 25]


def test_seq_survives_restart_even_when_the_spool_was_emptied(tmp_path):
    spool = Spool(tmp_path / "s.db")
    for _ in range(10):
        spool.append("t", payload)
    assert spool.ack(range(1, 11)) == 10
    assert spool.stats()["depth"] == 0
    spool.close()
    again = Spool(tmp_path / "s.db")
    assert again.append("t", payload) == 11      # never reused, although the table was empty


def test_unacked_records_survive_reopen_and_ack_deletes_only_those(tmp_path):
    spool = Spool(tmp_path / "s.db")
    for _ in range(5):
        spool.append("t", payload, retain=True)
    spool.ack([2, 4, 99])
    spool.close()
    again = Spool(tmp_path / "s.db")
    rows = again.read()
    assert [r.seq for r in rows] == [1, 3, 5] and all(r.retain for r in rows)
    assert again.stats()["depth"] == 3 and again.stats()["bytes"] == sum(len(r.payload) for r in rows)


def test_overflow_drops_oldest_and_counts_it_persistently(tmp_path):
    spool = Spool(tmp_path / "s.db", max_records=10)
    for _ in range(25):
        spool.append("t", payload)
    assert [r.seq for r in spool.read(limit=100)] == list(range(16, 26))
    assert spool.stats()["dropped"] == 15
    spool.close()
    assert Spool(tmp_path / "s.db", max_records=10).stats()["dropped"] == 15


def test_byte_bound_drops_oldest(tmp_path):
    spool = Spool(tmp_path / "s.db", max_records=1000, max_bytes=4096)
    for _ in range(40):
        spool.append("t", lambda seq: b"x" * 200)
    stats = spool.stats()
    assert stats["bytes"] <= 4096 and stats["depth"] == 4096 // 200
    assert stats["dropped"] == 40 - stats["depth"]
    assert spool.read(limit=1)[0].seq == 40 - stats["depth"] + 1


def test_a_record_bigger_than_a_quarter_of_the_spool_is_refused(tmp_path):
    spool = Spool(tmp_path / "s.db", max_bytes=4096)
    with pytest.raises(SpoolError) as err:
        spool.append("t", lambda seq: b"x" * 2000)
    assert err.value.code == "telemetry.record_too_large"
    assert spool.append("t", payload) == 1         # the refused one did not use up a seq


def test_a_corrupt_spool_file_is_a_typed_error(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolError) as err:
        Spool(path)
    assert "moved aside" in err.value.hint


def test_the_file_is_wal_with_full_sync(tmp_path):
    spool = Spool(tmp_path / "s.db")
    spool.append("t", payload)
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2     # FULL


def test_concurrent_appends_get_unique_gap_free_seqs(tmp_path):
    import threading
    spool = Spool(tmp_path / "s.db", sync="normal")
    got, lock = [], threading.Lock()

    def writer():
        for _ in range(100):
            seq = spool.append("t", payload)
            with lock:
                got.append(seq)
    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 401))
    assert [r.seq for r in spool.read(limit=1000)] == list(range(1, 401))


def test_append_many_is_one_all_or_nothing_transaction(tmp_path):
    spool = Spool(tmp_path / "s.db", max_bytes=4096)
    assert spool.append_many("t", [payload] * 5) == [1, 2, 3, 4, 5]
    with pytest.raises(SpoolError):
        spool.append_many("t", [payload, lambda seq: b"x" * 2000, payload])
    assert spool.append_many("t", []) == []
    assert spool.append("t", payload) == 6 and spool.stats()["depth"] == 6


ops = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 8)),
                         st.tuples(st.just("ack"), st.lists(st.integers(0, 40), max_size=6)),
                         st.tuples(st.just("reopen"), st.none())), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_spool_matches_a_simple_model_under_any_sequence_of_operations(tmp_path_factory, ops):
    """Model: an ordered dict seq -> payload, bounded to the newest 12; seqs never reused."""
    path = tmp_path_factory.mktemp("spool") / "s.db"
    spool, model, last, dropped = Spool(path, max_records=12, sync="normal"), {}, 0, 0
    for op, arg in ops:
        if op == "append":
            seqs = spool.append_many("t", [payload] * arg)
            assert seqs == list(range(last + 1, last + arg + 1))
            last = seqs[-1]
            model.update({s: payload(s) for s in seqs})
            while len(model) > 12:
                del model[min(model)]
                dropped += 1
        elif op == "ack":
            acked = [s for s in arg if s in model]
            assert spool.ack(arg) == len(set(acked))
            for s in acked:
                model.pop(s, None)
        else:
            spool.close()
            spool = Spool(path, max_records=12, sync="normal")
        rows = spool.read(limit=100)
        assert [(r.seq, r.payload) for r in rows] == sorted(model.items())
        assert spool.stats() == {"depth": len(model), "bytes": sum(map(len, model.values())),
                                 "dropped": dropped, "last_seq": last}
    spool.close()
