"""Scenarios with a device process that dies by SIGKILL (no clean shutdown, no final flush).

1. Mid-stream kill, then restart on the same spool: every record whose record() had returned
   (the process printed its seq) reaches the broker; sequence numbers continue after the restart.
2. Last Will: the broker publishes status ``offline`` within the keepalive bound. MQTT's bound is
   1.5 x keepalive after the last packet; mosquitto 2.0.11 checks keepalives in coarse steps, so
   the bound asserted is 1.5 x keepalive + 5 s (measured here: 10.5-11.6 s for keepalive 5,
   17.1 s for keepalive 10).
"""
import signal
import time

import pytest

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def will_bound(keepalive: int) -> float:
    return 1.5 * keepalive + 5.0


def test_sigkill_mid_stream_then_restart_replays_the_spool(mosquitto, tmp_path, collector_factory,
                                                          device_process):
    col = collector_factory(mosquitto.url, "ganglion/v1/crashy/#")
    spool = tmp_path / "spool.db"
    first = device_process(mosquitto.url, spool, "crashy", count=100_000, rate=400)
    assert first.wait_line(lambda x: x == "connected")
    assert first.wait_line(lambda x: x.startswith("seq ") and int(x.split()[1]) >= 600, timeout=30)
    first.kill()
    durable = first.seqs()                       # each of these had returned from record()
    assert len(durable) >= 600 and durable == list(range(1, len(durable) + 1))

    second = device_process(mosquitto.url, spool, "crashy", count=50, rate=500)
    assert second.wait_line(lambda x: x == "drained", timeout=60), second.stderr()
    new = second.seqs()
    assert new[0] > durable[-1] and new == list(range(new[0], new[0] + 50))    # seq survives the crash
    expected = set(durable) | set(new)
    assert col.wait_for(lambda: set(col.seqs()) >= expected, timeout=30), \
        sorted(expected - set(col.seqs()))[:20]
    got = col.seqs()
    # at least once: the first copies form an increasing stream without gaps up to the last seq
    first_copies = list(dict.fromkeys(got))
    assert first_copies == sorted(first_copies)
    assert first_copies == list(range(1, first_copies[-1] + 1))


@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_last_will_marks_a_lost_device_offline_within_keepalive(mosquitto, tmp_path, collector_factory,
                                                               device_process, how):
    """SIGKILL: the kernel closes the socket, the broker sees it at once. SIGSTOP: a hung device (or
    a cut cable) keeps the socket open, so only the keepalive timeout (1.5 x keepalive) reveals it."""
    keepalive = 5
    status = collector_factory(mosquitto.url, "ganglion/v1/lw/status", persistent=False)
    dev = device_process(mosquitto.url, tmp_path / "s.db", "lw", count=5, rate=50, keepalive=keepalive)
    assert dev.wait_line(lambda x: x == "drained")
    assert status.wait_for(lambda: status.records() and status.records()[-1]["data"]["state"] == "online")
    lost_at = time.monotonic()
    if how == "sigkill":
        dev.kill()
    else:
        dev.proc.send_signal(signal.SIGSTOP)
    try:
        assert status.wait_for(lambda: status.records()[-1]["data"]["state"] == "offline",
                               timeout=will_bound(keepalive) + 5)
        elapsed = time.monotonic() - lost_at
    finally:
        dev.kill()                       # SIGKILL also ends a stopped process
    last = status.records()[-1]
    assert last["data"]["reason"] == "lost" and last["device"] == "lw"
    late = collector_factory(mosquitto.url, "ganglion/v1/lw/status", persistent=False)
    assert late.wait_for(lambda: late.records())
    assert late.records()[-1]["data"]["state"] == "offline" and late.messages[-1].retain
    assert elapsed <= will_bound(keepalive)
    if how == "sigstop":
        assert elapsed >= keepalive      # the broker cannot know sooner: this is the keepalive path
