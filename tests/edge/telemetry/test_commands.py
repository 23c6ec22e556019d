"""Command checks, idempotency and signatures, driven directly (real SQLite id table, no broker).

The same paths run over a real broker in test_mqtt_commands.py; here hypothesis can throw thousands
of hostile payloads cheaply."""
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import keys
from core.errors import InputError
from edge.telemetry.commands import CommandLog, CommandRouter, parse_command
from edge.telemetry.errors import CommandError
from edge.telemetry.mqtt import Message
from edge.telemetry.signing import sign_command

TOPIC = "ganglion/v1/dev/cmd/"


class Device:
    """A router wired to lists instead of MQTT: what it replied, which events it logged."""

    def __init__(self, tmp_path, trusted=None, max_bytes=4096):
        self.replies, self.events, self.calls = [], [], []
        self.router = CommandRouter("dev", reply=lambda t, p, c: self.replies.append((t, json.loads(p), c)),
                                    event=self.events.append, log_db=CommandLog(tmp_path / "cmd.db"),
                                    trusted_keys=trusted, window_s=60, max_bytes=max_bytes)
        self.router.register("ping", lambda args: {"pong": True})
        self.router.register("echo", self._echo)
        self.router.register("fail", self._fail)
        self.router.register("bug", lambda args: 1 / 0)

    def _echo(self, args):
        self.calls.append(args)
        return {"args": args}

    def _fail(self, args):
        raise InputError("no such model", code="input.model", hint="check the path")

    def send(self, verb, payload, corr=b"c1", response="r/1"):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.router.handle(Message(TOPIC + verb, raw, 1, False, response, corr))


def test_reply_goes_to_response_topic_with_correlation(tmp_path):
    dev = Device(tmp_path)
    reply = dev.send("ping", {"id": "a", "args": {}}, corr=b"\x00\xffxyz")
    assert reply["ok"] and reply["result"] == {"pong": True} and reply["id"] == "a"
    assert dev.replies[-1][0] == "r/1" and dev.replies[-1][2] == b"\x00\xffxyz"
    dev.send("ping", {"id": "b", "args": {}}, response=None)
    assert dev.replies[-1][0] is None      # the service maps None to ganglion/v1/<dev>/replies


def test_same_id_replays_the_cached_reply_without_running_again(tmp_path):
    dev = Device(tmp_path)
    first = dev.send("echo", {"id": "x1", "args": {"n": 1}})
    again = dev.send("echo", {"id": "x1", "args": {"n": 1}})
    assert first == again and len(dev.calls) == 1
    # the table is on disk: a restarted device remembers
    dev2 = Device(tmp_path)
    assert dev2.send("echo", {"id": "x1", "args": {"n": 1}}) == first and dev2.calls == []
    reused = dev2.send("echo", {"id": "x1", "args": {"n": 2}})
    assert not reused["ok"] and reused["error"]["code"] == "command.id_reused" and dev2.calls == []


def test_handler_errors_become_error_replies(tmp_path):
    dev = Device(tmp_path)
    failed = dev.send("fail", {"id": "f", "args": {}})
    assert failed["error"] == {"code": "input.model", "message": "no such model", "where": None,
                               "hint": "check the path"}
    bug = dev.send("bug", {"id": "b", "args": {}})
    assert bug["error"]["code"] == "command.internal" and "ZeroDivisionError" in bug["error"]["message"]
    assert dev.send("ping", {"id": "p", "args": {}})["ok"]


@pytest.mark.parametrize("payload, code", [
    (b"", "command.malformed"),
    (b"\xff\xfe", "command.malformed"),
    (b"[1, 2]", "command.malformed"),
    (b'{"id": "a"}', "command.malformed"),
    (b'{"id": "", "args": {}}', "command.malformed"),
    (b'{"id": 5, "args": {}}', "command.malformed"),
    (b'{"id": "a", "args": []}', "command.malformed"),
    (b'{"id": "a", "args": {}, "extra": 1}', "command.malformed"),
    (b'{"id": "a\\n", "args": {}}', "command.malformed"),
    (b'{"id": "a", "args": {}, "sig": 12}', "command.malformed"),
    (b"[" * 100000 + b"]" * 100000, "command.too_large"),
    (json.dumps({"id": "a", "args": {"blob": "x" * 5000}}).encode(), "command.too_large"),
])
def test_bad_commands_are_refused_logged_and_not_cached(tmp_path, payload, code):
    dev = Device(tmp_path)
    reply = dev.send("echo", payload)
    assert not reply["ok"] and reply["error"]["code"] == code
    assert dev.events[-1]["event"] == "command_refused" and dev.events[-1]["code"] == code
    assert dev.calls == []


def test_deeply_nested_json_within_the_size_limit_is_refused(tmp_path):
    dev = Device(tmp_path, max_bytes=1 << 20)
    reply = dev.send("echo", b'{"id": "a", "args": ' + b"[" * 200000 + b"]" * 200000 + b"}")
    assert reply["error"]["code"] == "command.malformed"


def test_unknown_verb(tmp_path):
    dev = Device(tmp_path)
    reply = dev.send("format-disk", {"id": "a", "args": {}})
    assert reply["error"]["code"] == "command.unknown_verb" and "ping" in reply["error"]["hint"]


@pytest.fixture
def keypair(tmp_path):
    priv, pub = keys.generate(tmp_path / "cmd.key")
    other, _ = keys.generate(tmp_path / "other.key")
    return keys.load_private(priv), keys.load_public(pub), keys.load_private(other)


def test_signed_commands(tmp_path, keypair):
    priv, pub, other = keypair
    dev = Device(tmp_path, trusted=[pub])
    good = sign_command(priv, TOPIC + "echo", {"id": "s1", "args": {"a": 1}})
    assert dev.send("echo", good)["ok"]
    cases = {
        "unsigned": {"id": "s2", "args": {}},
        "wrong key": sign_command(other, TOPIC + "echo", {"id": "s3", "args": {}}),
        "other topic": sign_command(priv, TOPIC + "ping", {"id": "s4", "args": {}}),
        "other device": sign_command(priv, "ganglion/v1/dev2/cmd/echo", {"id": "s5", "args": {}}),
        "tampered args": {**sign_command(priv, TOPIC + "echo", {"id": "s6", "args": {"a": 1}}), "args": {"a": 2}},
        "not hex": {**good, "id": "s7", "sig": "zz"},
    }
    for name, command in cases.items():
        reply = dev.send("echo", command)
        assert reply["error"]["code"] == "command.unauthorized", name
    stale = sign_command(priv, TOPIC + "echo", {"id": "s8", "args": {}}, now=time.time() - 3600)
    assert dev.send("echo", stale)["error"]["code"] == "command.stale"
    assert len(dev.calls) == 1 and len(dev.events) == len(cases) + 1


def test_an_unauthorized_command_cannot_read_or_poison_a_cached_reply(tmp_path, keypair):
    priv, pub, other = keypair
    dev = Device(tmp_path, trusted=[pub])
    forged = sign_command(other, TOPIC + "echo", {"id": "shared", "args": {}})
    assert dev.send("echo", forged)["error"]["code"] == "command.unauthorized"
    real = sign_command(priv, TOPIC + "echo", {"id": "shared", "args": {}})
    assert dev.send("echo", real)["ok"] and len(dev.calls) == 1
    assert "result" not in dev.send("echo", forged)


def test_parse_command_accepts_the_documented_shape():
    cmd = parse_command(b'{"id": "a", "args": {"x": [1, 2]}, "ts": 5, "sig": "ab"}', 1000, "t")
    assert cmd["args"] == {"x": [1, 2]}
    with pytest.raises(CommandError):
        parse_command(b"{}", 1000, "t")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(st.binary(max_size=5000),
                         json_values.map(lambda v: json.dumps(v).encode()),
                         st.dictionaries(st.sampled_from(["id", "args", "ts", "sig", "x"]), json_values)
                         .map(lambda d: json.dumps(d).encode())),
       verb=st.sampled_from(["ping", "echo", "nope", "fail"]))
def test_any_payload_gets_exactly_one_reply_and_never_raises(tmp_path, payload, verb):
    dev = Device(tmp_path)
    before = len(dev.replies)
    reply = dev.send(verb, payload)
    assert len(dev.replies) == before + 1 and dev.replies[-1][1] == reply
    assert isinstance(reply["ok"], bool) and ("result" in reply) == reply["ok"]
    if not reply["ok"]:
        assert reply["error"]["code"].startswith(("command.", "input."))


@pytest.mark.parametrize("workers, queue, code", [(2, 4, "command.in_progress"), (1, 1, "command.busy")])
def test_a_duplicate_while_running_is_in_progress_and_a_full_queue_is_busy(tmp_path, workers, queue, code):
    import threading
    release, started = threading.Event(), threading.Event()
    replies = []
    router = CommandRouter("dev", reply=lambda t, p, c: replies.append(json.loads(p)), event=lambda e: None,
                           log_db=CommandLog(tmp_path / "cmd.db"), workers=workers, queue=queue)

    def slow(args):
        started.set()
        release.wait(5)
        return {"done": True}
    router.register("slow", slow)
    msg = Message(TOPIC + "slow", json.dumps({"id": "one", "args": {}}).encode(), 1, False, "r", b"c")
    router.on_message(msg)
    assert started.wait(5)
    router.on_message(msg)        # same id while the first still runs (a second worker, or no free slot)
    deadline = time.monotonic() + 5
    while not replies and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["error"]["code"] for r in replies] == [code]
    release.set()
    router.close()
    assert replies[-1]["ok"] and replies[-1]["result"] == {"done": True}


def test_envelope_route_answers_on_reply_to_and_echoes_each_senders_corr(tmp_path):
    """MQTT 3.1.1: no properties, the route is in the JSON; a replay from another requester (same
    id) gets the cached reply with ITS corr, and a route never enters the cache."""
    dev = Device(tmp_path)
    first = dev.send("echo", {"id": "e1", "args": {"a": 1}, "reply_to": "req/A", "corr": "ca"}, None, None)
    again = dev.send("echo", {"id": "e1", "args": {"a": 1}, "reply_to": "req/B", "corr": "cb"}, None, None)
    assert [(t, r["corr"], c) for t, r, c in dev.replies] == [("req/A", "ca", b"ca"), ("req/B", "cb", b"cb")]
    assert first["result"] == again["result"] and dev.calls == [{"a": 1}]
    # MQTT 5 properties win over the JSON route, and their reply has no "corr" key (unchanged bytes)
    dev.send("ping", {"id": "p1", "args": {}, "reply_to": "req/C", "corr": "cc"}, b"v5", "r/5")
    assert dev.replies[-1][0] == "r/5" and dev.replies[-1][2] == b"v5" and "corr" not in dev.replies[-1][1]


@pytest.mark.parametrize("route", [{"reply_to": "a/+/b"}, {"reply_to": ""}, {"reply_to": 7},
                                   {"corr": ""}, {"corr": "x" * 129}, {"corr": "\x00"}])
def test_bad_envelope_routes_are_malformed(route):
    with pytest.raises(CommandError) as err:
        parse_command(json.dumps({"id": "x", "args": {}, **route}).encode(), 4096, "t")
    assert err.value.code == "command.malformed"


def test_the_route_is_signed_and_absent_it_leaves_the_signed_bytes_as_before():
    from edge.telemetry.signing import canonical
    assert canonical("t", "i", {}, 5) == b'ganglion-cmd/1\nt\n{"args":{},"id":"i","ts":5}'
    assert canonical("t", "i", {}, 5, {"reply_to": "r", "corr": "c"}) == \
        b'ganglion-cmd/1\nt\n{"args":{},"corr":"c","id":"i","reply_to":"r","ts":5}'
