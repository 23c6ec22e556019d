"""The input gate's logic (edge/telemetry/inflow.py) with an in-memory PUBACK window: the bound,
the pause and resume, and redeliveries matched to inputs already held. Last, a property test
against a fake broker that ignores Receive Maximum, drops connections and loses PUBACKs: the bound
always holds and every input runs exactly once. The real-broker scenarios are in
tests/edge/daemon/test_mqtt_flow.py (2,000 inputs through a slow model) and test_mqtt_acks.py."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.telemetry.inflow import ADOPTED, PAUSE, SHED, TAKE, InputGate, input_key
from edge.telemetry.mqtt import AckWindow


class Link:
    """One broker connection as the gate sees it: a PUBACK window that records what it sends."""

    def __init__(self, gate: InputGate):
        self.gate, self.sent, self.mid = gate, [], 0
        self.window = AckWindow(self.sent.append)
        gate.connected()

    def deliver(self, name: str, dup: bool = False):
        self.mid += 1
        mid = self.mid
        return self.gate.admit(key(name), dup, lambda token: self.window.add(mid, token))

    def close(self) -> None:
        self.gate.disconnected(self.window.reset_pending())


def key(name: str) -> tuple:
    return input_key("in/x", name.encode(), None, None)


def test_takes_up_to_the_limit_then_pauses_and_sheds():
    gate = InputGate(limit=3)
    link = Link(gate)
    verdicts = [link.deliver(f"m{i}")[0] for i in range(5)]
    assert verdicts == [TAKE, TAKE, TAKE, PAUSE, SHED]
    assert (gate.held, gate.held_max, gate.paused) == (3, 3, True)
    assert gate.stats()["pauses"] == 1 and gate.stats()["shed"] == 2


def test_no_limit_never_pauses():
    gate = InputGate()
    link = Link(gate)
    assert {link.deliver(f"m{i}")[0] for i in range(500)} == {TAKE} and gate.held == 500


def test_resume_is_asked_once_when_held_falls_to_resume_at():
    resumed = []
    gate = InputGate(limit=4, on_resume=lambda: resumed.append(gate.held))
    assert gate.resume_at == 2
    link = Link(gate)
    tokens = [link.deliver(f"m{i}")[1] for i in range(4)]
    assert link.deliver("m4")[0] == PAUSE
    link.close()
    tokens[0].answer()
    assert resumed == []                     # 3 held: not yet
    tokens[1].answer()
    tokens[2].answer()
    assert resumed == [2]                    # once, at 2, not again at 1
    tokens[1].answer()                       # a second answer changes nothing
    assert gate.held == 1
    Link(gate)                               # the new connection takes deliveries again
    assert not gate.paused


def test_answers_on_the_current_link_ack_in_order():
    gate = InputGate(limit=10)
    link = Link(gate)
    a, b = link.deliver("a")[1], link.deliver("b")[1]
    b.answer()
    assert link.sent == []                   # b waits for a (in-order PUBACKs)
    a.answer()
    assert link.sent == [1, 2] and gate.held == 0


def test_a_redelivery_of_an_input_already_held_is_adopted_not_handed_over_twice():
    gate = InputGate(limit=10)
    first = Link(gate)
    a, b, c = (first.deliver(n)[1] for n in "abc")
    b.answer()                               # answered, PUBACK held behind a
    first.close()                            # a and b (and c) wait for their redelivery
    c.answer()                               # answered while disconnected
    second = Link(gate)
    assert second.deliver("a", dup=True) == (ADOPTED, a)
    assert second.deliver("b", dup=True)[0] == ADOPTED
    assert second.deliver("c", dup=True)[0] == ADOPTED
    assert second.sent == []                 # a is not answered yet: nothing may pass it
    assert second.deliver("d")[0] == TAKE    # a new input is taken as usual
    a.answer()                               # ... and a's answer acks a, b, c on this link
    assert second.sent == [1, 2, 3] and gate.held == 1
    assert gate.stats()["adopted"] == 3


def test_only_a_dup_is_matched_and_identical_inputs_are_matched_one_for_one():
    gate = InputGate(limit=10)
    first = Link(gate)
    x1, x2 = first.deliver("x")[1], first.deliver("x")[1]      # the same bytes twice
    x2.answer()                                                 # its PUBACK waits behind x1
    first.close()
    second = Link(gate)
    assert second.deliver("x", dup=False)[0] == TAKE            # not a redelivery: a new input
    assert second.deliver("x", dup=True)[0] == ADOPTED          # x1's copy
    assert second.deliver("x", dup=True)[0] == ADOPTED          # x2's copy
    assert second.deliver("x", dup=True)[0] == TAKE             # nothing left to match
    x1.answer()
    assert gate.held == 2                                       # the two taken on `second`
    assert second.sent == []                                    # the first delivery is unanswered


def test_an_orphan_survives_connections_that_pause_before_its_redelivery():
    gate = InputGate(limit=2)
    first = Link(gate)
    first.deliver("a")
    first.deliver("b")[1].answer()           # answered; its PUBACK waits behind a's
    first.close()
    for _ in range(5):                       # short connections that never resend "b"
        link = Link(gate)
        link.close()
    assert Link(gate).deliver("b", dup=True)[0] == ADOPTED


def test_answered_orphans_are_bounded():
    gate = InputGate()
    gate.max_orphans = 3
    link = Link(gate)
    first = link.deliver("n0")[1]            # unanswered: every later PUBACK waits behind it
    for i in range(1, 5):
        link.deliver(f"n{i}")[1].answer()
    link.close()
    assert gate.stats()["orphans"] == 5
    second = Link(gate)
    assert gate.stats()["orphans"] == 4      # the 3 newest answered + the unanswered one
    assert second.deliver("n1", dup=True)[0] == TAKE         # the oldest answered was forgotten
    assert second.deliver("n0", dup=True)[0] == ADOPTED
    first.answer()


class SentLink(Link):
    """A link whose window reports each PUBACK sent back to the gate, as MqttClient wires it."""

    def __init__(self, gate: InputGate):
        super().__init__(gate)
        self.window = AckWindow(self.sent.append, on_sent=gate.sent)


def test_a_redelivery_of_an_input_already_acked_is_acked_again_not_run_again():
    gate = InputGate(limit=10)
    first = SentLink(gate)
    a = first.deliver("a")[1]
    a.answer()
    assert first.sent == [1] and gate.stats()["acked_kept"] == 1
    first.close()
    second = SentLink(gate)                  # the broker lost that PUBACK and resends "a"
    assert second.deliver("a", dup=True)[0] == ADOPTED
    assert second.sent == [1] and gate.held == 0
    assert second.deliver("a", dup=False)[0] == TAKE          # the same bytes, published again


def test_acked_inputs_are_remembered_up_to_a_bound():
    gate = InputGate()
    gate.max_orphans = 2
    link = SentLink(gate)
    for name in "abc":
        link.deliver(name)[1].answer()
    assert gate.stats()["acked_kept"] == 2
    assert link.deliver("a", dup=True)[0] == TAKE             # the oldest was forgotten
    assert link.deliver("c", dup=True)[0] == ADOPTED


class FakeBroker:
    """A broker that ignores Receive Maximum and loses PUBACKs when told to: every message stays
    in the session until a PUBACK for it arrives; a new connection resends the unacked ones that
    were sent before (DUP) in order, then the rest. Not a model of any one broker -- the worst of
    what the gate must survive."""

    def __init__(self, count: int):
        self.unacked = list(range(count))        # message ids, publish order
        self.sent_before: set[int] = set()
        self.by_mid: dict[int, int] = {}
        self.queue: list[int] = []
        self.lose_next_ack = False

    def connect(self) -> None:
        self.by_mid, self.queue = {}, list(self.unacked)

    def next_delivery(self) -> tuple[int, int, bool] | None:
        if not self.queue:
            return None
        msg = self.queue.pop(0)
        mid = len(self.by_mid) + 1
        self.by_mid[mid] = msg
        dup = msg in self.sent_before
        self.sent_before.add(msg)
        return mid, msg, dup

    def puback(self, mid: int) -> None:
        if self.lose_next_ack:
            self.lose_next_ack = False
            return
        msg = self.by_mid[mid]
        if msg in self.unacked:
            self.unacked.remove(msg)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.lists(st.sampled_from(["deliver", "deliver", "deliver", "answer", "answer",
                                                     "drop", "lose"]), max_size=120), st.randoms())
def test_whatever_the_broker_does_the_bound_holds_and_every_input_runs_exactly_once(limit, script, rnd):
    count = 12
    broker, gate = FakeBroker(count), None
    runs: dict[int, int] = {}
    held: list = []                              # (msg, token) handed over, unanswered
    state = {"connected": False, "resume": False}
    gate = InputGate(limit=limit, on_resume=lambda: state.update(resume=True))
    window = None

    def connect():
        nonlocal window
        broker.connect()
        window = AckWindow(broker.puback, on_sent=gate.sent)
        gate.connected()
        state.update(connected=True, resume=False)

    def close():
        gate.disconnected(window.reset_pending())
        state["connected"] = False

    def step(action):
        if action == "answer":                   # the daemon answers whether connected or not
            if held:
                held.pop(rnd.randrange(len(held))).answer()
        elif not state["connected"]:
            if not gate.paused or state["resume"]:
                connect()                        # paho's reconnect, or the gate's resume
        elif action == "deliver":
            delivery = broker.next_delivery()
            if delivery is None:
                return
            mid, msg, dup = delivery
            verdict, token = gate.admit(("t", msg, None, None), dup, lambda t: window.add(mid, t))
            if verdict == TAKE:
                runs[msg] = runs.get(msg, 0) + 1
                held.append(token)
            elif verdict == PAUSE:
                close()
        elif action == "drop":
            close()                              # the network, not the gate
        elif action == "lose":
            broker.lose_next_ack = True
        assert gate.held == len(held) <= limit

    connect()
    for action in script:
        step(action)
    for _ in range(20 * count * (limit + 2)):    # then drain: answer everything, never lose a PUBACK
        if not broker.unacked and not held:
            break
        broker.lose_next_ack = False
        if state["connected"] and not broker.queue and not held:
            step("drop")                         # a lost PUBACK comes back only on a new connection
        else:
            step("answer" if held and rnd.random() < 0.5 else "deliver")
    assert not broker.unacked and not held, (broker.unacked, len(held))
    assert runs == {msg: 1 for msg in range(count)}
