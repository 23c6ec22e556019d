"""Logic tests of the supervisor: strategies, restart types, intensity, escalation, ordering.

Children here are in-memory fakes (the supervisor's logic is what is under test); real worker
processes are exercised in tests/edge/daemon/.
"""
import time

import pytest

from core.errors import UsageError
from edge.supervisor import ChildSpec, Exit, Restart, Strategy, Supervisor, ThreadChild


class FakeChild:
    def __init__(self, name, log):
        self.name, self.log, self._cb, self.stopped = name, log, None, False

    def monitor(self, cb):
        self._cb = cb

    def stop(self, timeout):
        self.stopped = True
        self.log.append(("stop", self.name))

    def crash(self, reason="boom"):
        self._cb(Exit(False, reason))

    def finish(self):
        self._cb(Exit(True, "normal"))


class Farm:
    """Builds child specs and remembers every child it started, in order."""

    def __init__(self):
        self.log, self.current = [], {}

    def spec(self, name, restart=Restart.PERMANENT, fail_start=False):
        def start():
            if fail_start:
                raise RuntimeError("cannot start")
            child = FakeChild(name, self.log)
            self.current[name] = child
            self.log.append(("start", name))
            return child
        return ChildSpec(name, start, restart=restart, shutdown=0.1)

    def starts(self, name):
        return sum(1 for op, n in self.log if op == "start" and n == name)


def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def make(farm, names, **kw):
    events = []
    sup = Supervisor("root", [farm.spec(n) if isinstance(n, str) else n for n in names],
                     on_event=events.append, **kw)
    return sup, events


def test_children_start_in_order_and_stop_in_reverse():
    farm = Farm()
    sup, _ = make(farm, ["a", "b", "c"])
    sup.start()
    sup.stop()
    assert farm.log == [("start", "a"), ("start", "b"), ("start", "c"),
                        ("stop", "c"), ("stop", "b"), ("stop", "a")]


def test_one_for_one_restarts_only_the_crashed_child():
    farm = Farm()
    sup, events = make(farm, ["a", "b", "c"])
    sup.start()
    farm.current["b"].crash()
    assert wait_for(lambda: farm.starts("b") == 2)
    assert farm.starts("a") == farm.starts("c") == 1
    assert [e["event"] for e in events] == ["crash", "restart"]
    assert events[0]["reason"] == "boom"
    sup.stop()


def test_rest_for_one_restarts_the_child_and_those_after_it():
    farm = Farm()
    sup, _ = make(farm, ["a", "b", "c"], strategy=Strategy.REST_FOR_ONE)
    sup.start()
    farm.current["b"].crash()
    assert wait_for(lambda: farm.starts("c") == 2)
    assert (farm.starts("a"), farm.starts("b")) == (1, 2)
    tail = farm.log[3:]
    assert tail == [("stop", "c"), ("start", "b"), ("start", "c")]
    sup.stop()


def test_one_for_all_restarts_everyone_stopping_in_reverse():
    farm = Farm()
    sup, _ = make(farm, ["a", "b", "c"], strategy=Strategy.ONE_FOR_ALL)
    sup.start()
    farm.current["a"].crash()
    assert wait_for(lambda: farm.starts("c") == 2)
    assert farm.log[3:] == [("stop", "c"), ("stop", "b"), ("start", "a"), ("start", "b"), ("start", "c")]
    sup.stop()


@pytest.mark.parametrize("restart, crash, restarted", [
    (Restart.PERMANENT, False, True), (Restart.PERMANENT, True, True),
    (Restart.TRANSIENT, False, False), (Restart.TRANSIENT, True, True),
    (Restart.TEMPORARY, False, False), (Restart.TEMPORARY, True, False),
])
def test_restart_types(restart, crash, restarted):
    farm = Farm()
    sup, events = make(farm, [farm.spec("a", restart=restart), "b"])
    sup.start()
    child = farm.current["a"]
    child.crash() if crash else child.finish()
    if restarted:
        assert wait_for(lambda: farm.starts("a") == 2)
    else:
        time.sleep(0.1)
        assert farm.starts("a") == 1
        assert not any(e["event"] == "restart" for e in events)
    if restart is Restart.TEMPORARY:
        assert [s.id for s in sup.specs] == ["b"]        # forgotten, as in OTP
    assert farm.starts("b") == 1
    sup.stop()


def test_intensity_exceeded_stops_children_and_escalates_with_a_reason():
    farm, exits = Farm(), []
    sup, events = make(farm, ["a", "b"], max_restarts=2, period=10.0)
    sup.monitor(exits.append)
    sup.start()
    for _ in range(3):
        n = farm.starts("a")
        farm.current["a"].crash("segfault")
        wait_for(lambda: farm.starts("a") > n or exits, 1.0)
    assert wait_for(lambda: exits)
    assert farm.starts("a") == 3                          # 2 restarts allowed, the 3rd crash gives up
    assert not exits[0].normal and "max restart intensity" in exits[0].reason
    esc = [e for e in events if e["event"] == "escalation"]
    assert len(esc) == 1 and "segfault" in esc[0]["reason"]
    assert ("stop", "b") in farm.log
    assert sup.wait(1.0) == exits[0]


def test_restarts_outside_the_period_do_not_count():
    farm, now = Farm(), [0.0]
    sup, events = make(farm, ["a"], max_restarts=1, period=5.0, clock=lambda: now[0])
    sup.start()
    for i in range(4):
        now[0] = i * 6.0                                   # one crash every 6 s > period
        n = farm.starts("a")
        farm.current["a"].crash()
        assert wait_for(lambda: farm.starts("a") == n + 1)
    assert not any(e["event"] == "escalation" for e in events)
    sup.stop()


def test_max_restarts_zero_means_give_up_at_first_crash():
    farm, exits = Farm(), []
    sup, _ = make(farm, ["a"], max_restarts=0)
    sup.monitor(exits.append)
    sup.start()
    farm.current["a"].crash()
    assert wait_for(lambda: exits)
    assert farm.starts("a") == 1


def test_nested_supervisor_escalates_to_its_parent_which_restarts_it():
    farm, events = Farm(), []
    inner = Supervisor("workers", [farm.spec("w1"), farm.spec("w2")], max_restarts=1, period=10,
                       on_event=events.append)
    outer = Supervisor("root", [farm.spec("source"),
                                ChildSpec("workers", inner.start, kind="supervisor", describe=inner.describe)],
                       max_restarts=3, period=10, on_event=events.append)
    outer.start()
    farm.current["w1"].crash()
    assert wait_for(lambda: farm.starts("w1") == 2)
    farm.current["w1"].crash()                             # second crash: inner gives up
    assert wait_for(lambda: farm.starts("w1") == 3)        # ...and root restarts the inner tree afresh
    kinds = [(e["supervisor"], e["event"]) for e in events]
    assert ("workers", "escalation") in kinds
    assert ("root", "crash") in kinds and ("root", "restart") in kinds
    assert farm.starts("source") == 1
    text = "\n".join(outer.describe())
    assert "workers (supervisor: one_for_one" in text and "w2 (worker, permanent" in text
    outer.stop()


def test_a_failing_restart_counts_towards_intensity():
    farm, exits = Farm(), []
    state = {"fail": False}

    def start():
        if state["fail"]:
            raise RuntimeError("model file vanished")
        child = FakeChild("a", farm.log)
        farm.current["a"] = child
        return child

    sup = Supervisor("root", [ChildSpec("a", start, shutdown=0.1)], max_restarts=3, period=10)
    sup.monitor(exits.append)
    sup.start()
    state["fail"] = True
    farm.current["a"].crash()
    assert wait_for(lambda: exits)
    assert "model file vanished" in exits[0].reason


def test_failed_initial_start_stops_started_children_and_raises():
    farm = Farm()
    sup, _ = make(farm, ["a", farm.spec("b", fail_start=True), "c"])
    with pytest.raises(RuntimeError):
        sup.start()
    assert farm.log == [("start", "a"), ("stop", "a")]


def test_duplicate_ids_are_a_usage_error():
    farm = Farm()
    with pytest.raises(UsageError):
        Supervisor("root", [farm.spec("a"), farm.spec("a")])


def test_thread_children_report_normal_and_abnormal_exits():
    exits = []

    def crashes(stop):
        raise ValueError("bad frame")

    ThreadChild(crashes, "t").monitor(exits.append)
    child = ThreadChild(lambda stop: stop.wait(), "u")
    child.monitor(exits.append)
    child.stop(1.0)
    assert wait_for(lambda: len(exits) == 2)
    assert Exit(False, "ValueError: bad frame") in exits and Exit(True, "normal") in exits


def test_supervised_threads_restart_for_real():
    runs = []

    def flaky(stop):
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("flaky")
        stop.wait()

    sup = Supervisor("root", [ChildSpec("t", lambda: ThreadChild(flaky, "t"), shutdown=1.0)], max_restarts=5)
    sup.start()
    assert wait_for(lambda: len(runs) == 3)
    assert wait_for(lambda: sup.restarts == 2)      # counted just after the child's start returns
    sup.stop()
    assert not sup.children()
