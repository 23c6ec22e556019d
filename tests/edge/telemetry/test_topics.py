"""The verb -> topic mapping (topics.py): every dotted verb becomes topic levels that NATS and
RabbitMQ accept, maps back to the same verb, and a device still answers the legacy dotted topic
(signed over that topic) on a broker that carries it (mosquitto)."""
import json

import pytest

from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.commands import CommandRouter
from edge.telemetry.errors import CommandError
from edge.telemetry.signing import sign_command
from edge.telemetry.topics import VERB_RE, command_filter, command_topic, legacy_command_topic, verb_of
from core import keys

VERBS = ["ping", "config.set", "config.get", "deploy.begin", "deploy.chunk", "deploy.commit",
         "deploy-firmware.status", "deploy-firmware-url", "a.b.c"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_topic_is_broker_safe_and_maps_back(verb):
    topic = command_topic("cam-1", verb)
    levels = topic.split("/")
    # NATS maps '/' to '.' and closes the connection on a level holding '.' or ' ' (FACTS.md)
    assert all(level and "." not in level and " " not in level for level in levels), topic
    assert verb_of(topic) == verb == verb_of(legacy_command_topic("cam-1", verb))
    assert topic.startswith(command_filter("cam-1")[:-1])


@pytest.mark.parametrize("verb", ["a..b", ".a", "a.", "a/b", "a+b", "", "x" * 65, "a. b"])
def test_verbs_that_cannot_map_to_levels_are_refused(verb):
    assert not VERB_RE.match(verb)
    router = CommandRouter("d", reply=lambda *a: None, event=lambda e: None, log_db=None)
    with pytest.raises(CommandError) as err:
        router.register(verb, lambda args: {})
    assert err.value.code == "command.bad_verb"


@pytest.mark.mqtt
def test_device_answers_new_and_legacy_topics(mosquitto, tmp_path):
    from edge.telemetry.requester import Requester
    priv, pub = tmp_path / "ops.key", tmp_path / "ops.key.pub"
    keys.generate(priv, pub)
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url, command_keys=(str(pub),)), "topdev", tmp_path / "s.db")
    tm.register_command("config.set", lambda args: {"set": args["value"]})
    tm.start()
    try:
        assert tm.wait_connected(10)
        with Requester(mosquitto.url) as req:
            new = req.call("topdev", "config.set", {"value": 1}, key=keys.load_private(priv))
            assert new["ok"] and new["result"] == {"set": 1} and new["verb"] == "config.set"
            # an older tool: dotted topic, signature over that topic
            legacy = legacy_command_topic("topdev", "config.set")
            command = sign_command(keys.load_private(priv), legacy, {"id": "old-1", "args": {"value": 2}})
            old = _call_on(req, legacy, command)
            assert old["ok"] and old["result"] == {"set": 2}
            # a signature made for the legacy topic does not pass on the new one (topic binding)
            moved = _call_on(req, command_topic("topdev", "config.set"), dict(command, id="old-2"))
            assert not moved["ok"] and moved["error"]["code"] == "command.unauthorized"
    finally:
        tm.stop(flush_timeout=0.5)



def _call_on(req, topic: str, command: dict) -> dict:
    return req.call_raw("topdev", "", json.dumps(command).encode(), topic=topic)
