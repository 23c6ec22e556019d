"""Supervising real processes: exit reasons, restarts, and the shutdown timeout ending in SIGKILL."""
import multiprocessing
import time

import pytest

from edge.supervisor import ChildSpec, Exit, ProcessChild, Restart, Supervisor
from tests.edge.supervisor import procs
from tests.edge.supervisor.test_supervisor import wait_for

CTX = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.timeout(60)


def child(target, *args, name="p"):
    def start():
        proc = CTX.Process(target=target, args=args, daemon=True)
        proc.start()
        return ProcessChild(proc, name)
    return start


@pytest.mark.parametrize("target, args, expected", [
    (procs.exits, (0,), Exit(True, "normal")),
    (procs.exits, (3,), Exit(False, "exit code 3")),
    (procs.segfaults, (), Exit(False, "killed by SIGSEGV")),
])
def test_process_exit_reasons(target, args, expected):
    exits = []
    child(target, *args)().monitor(exits.append)
    assert wait_for(lambda: exits, timeout=20)
    assert exits == [expected]


def test_crashing_process_is_restarted_and_transient_normal_exit_is_not():
    events = []
    sup = Supervisor("root", [ChildSpec("crasher", child(procs.segfaults), shutdown=1.0),
                              ChildSpec("done", child(procs.exits, 0), restart=Restart.TRANSIENT, shutdown=1.0)],
                     max_restarts=2, period=30, on_event=events.append)
    exits = []
    sup.monitor(exits.append)
    sup.start()
    assert wait_for(lambda: exits, timeout=30)               # 3 segfaults in 30 s: gives up
    restarts = [e["child"] for e in events if e["event"] == "restart"]
    assert restarts == ["crasher", "crasher"]
    assert "SIGSEGV" in exits[0].reason


def test_shutdown_timeout_ends_in_sigkill_for_a_process_ignoring_sigterm():
    start = child(procs.stubborn, name="stubborn")
    sup = Supervisor("root", [ChildSpec("stubborn", start, shutdown=0.5)])
    sup.start()
    handle = sup.children()["stubborn"]
    time.sleep(1.0)                                          # let it install its SIGTERM handler
    t0 = time.monotonic()
    sup.stop()
    took = time.monotonic() - t0
    assert not handle.alive
    assert handle.process.exitcode == -9                    # SIGKILL, after the 0.5 s grace
    assert 0.4 < took < 5.0
