"""Broker URLs, device ids, topics and TelemetryConfig validation (pure logic)."""
import json

import pytest

from edge.errors import UsageError
from edge.telemetry.config import TelemetryConfig, check_device_id, parse_broker_url
from edge.telemetry.topics import device_topic, envelope, split_topic


@pytest.mark.parametrize("url, host, port, tls, user, password", [
    ("mqtt://127.0.0.1:1884", "127.0.0.1", 1884, False, None, None),
    ("mqtt://broker.local", "broker.local", 1883, False, None, None),
    ("mqtts://broker.local", "broker.local", 8883, True, None, None),
    ("MQTTS://b:9999/", "b", 9999, True, None, None),
    ("mqtt://dev%40x:p%3Ass@h:1", "h", 1, False, "dev@x", "p:ss"),
])
def test_parse_broker_url(url, host, port, tls, user, password):
    u = parse_broker_url(url)
    assert (u.host, u.port, u.tls, u.username, u.password) == (host, port, tls, user, password)


@pytest.mark.parametrize("url", ["127.0.0.1:1883", "http://h:1", "mqtt://", "mqtt://h:99999", "mqtt://h:x",
                                 "mqtt://h/topic", "mqtt://h?x=1", "", None])
def test_bad_broker_urls_are_usage_errors(url):
    with pytest.raises(UsageError) as err:
        parse_broker_url(url)
    assert err.value.code == "usage.broker_url" and err.value.exit_code == 2


@pytest.mark.parametrize("device", ["cam1", "a.b_c-d", "X" * 64])
def test_good_device_ids(device):
    assert check_device_id(device) == device


@pytest.mark.parametrize("device", ["", "a/b", "a+b", "#", "x" * 65, "-lead", "sp ace", "é"])
def test_bad_device_ids(device):
    with pytest.raises(UsageError):
        check_device_id(device)


def test_config_from_dict_refuses_unknown_keys_and_bad_values():
    cfg = TelemetryConfig.from_dict({"broker": "mqtt://h:1", "keepalive": 10, "command_keys": "k.pub"})
    assert cfg.command_keys == ("k.pub",) and cfg.url.port == 1
    assert (cfg.input_receive_max, cfg.input_session_expiry) == (64, 86400)
    assert TelemetryConfig.from_dict({"input_receive_max": 8}).input_receive_max == 8
    with pytest.raises(UsageError, match="keepalive_s"):
        TelemetryConfig.from_dict({"keepalive_s": 10})
    for bad in ({"keepalive": 1}, {"inflight": 0}, {"spool_sync": "off"}, {"cert_file": "c.pem"},
                {"ca_file": "ca.pem"}, {"spool_max_records": 1}, {"input_receive_max": 0},
                {"input_receive_max": 65536}, {"input_session_expiry": 0}):
        with pytest.raises(UsageError):
            TelemetryConfig(**bad)


def test_topics_and_envelope():
    assert device_topic("d", "metrics") == "ganglion/v1/d/metrics"
    assert device_topic("d", "results", "mnv2") == "ganglion/v1/d/results/mnv2"
    assert split_topic("ganglion/v1/d/results/mnv2") == ("d", "results", "mnv2")
    assert split_topic("other/v1/d/metrics") is None
    for kind, sub in (("results", None), ("results", "a/b"), ("metrics", "x"), ("logs", None)):
        with pytest.raises(UsageError):
            device_topic("d", kind, sub)
    body = json.loads(envelope(7, 1.5, "d", "events", {"event": "x"}))
    assert body == {"seq": 7, "ts": 1.5, "device": "d", "kind": "events", "data": {"event": "x"}}
    with pytest.raises(UsageError):
        envelope(1, 0, "d", "metrics", {"bad": float("nan")})
    with pytest.raises(UsageError):
        envelope(1, 0, "d", "metrics", {"bad": object()})
