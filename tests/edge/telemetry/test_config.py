"""Broker URLs, device ids, topics and TelemetryConfig validation (pure logic)."""
import json

import pytest

from core.errors import UsageError
from edge.telemetry.config import TelemetryConfig, check_device_id, parse_broker_url
from edge.telemetry.topics import device_topic, envelope, split_topic


@pytest.mark.parametrize("url, host, port, tls, user, password", [
    ("mqtt://127.0.0.1:1884", "127.0.0.1", 1884, False, None, None),
    ("mqtt://broker.local", "broker.local", 1883, False, None, None),
    ("mqtts://broker.local", "broker.local", 8883, True, None, None),
    ("MQTTS://b:9999/", "b", 9999, True, None, None),
    ("mqtt://dev%40x:p%3Ass@h:1", "h", 1, False, "dev@x", "p:ss"),
    ("mqtt://[::1]:1884", "::1", 1884, False, None, None),
    ("mqtts://u@[2001:db8::7]", "2001:db8::7", 8883, True, "u", None),
    ("mqtt://[fe80::1%25eth0]:5", "fe80::1%eth0", 5, False, None, None),    # RFC 6874 zone
    # the short form is plain MQTT
    ("broker.local", "broker.local", 1883, False, None, None),
    ("Broker.Local:1884", "broker.local", 1884, False, None, None),
    ("127.0.0.1:1883", "127.0.0.1", 1883, False, None, None),
    ("[::1]:1883", "::1", 1883, False, None, None),
    ("[::1]", "::1", 1883, False, None, None),
    ("[2001:DB8::7]:65535", "2001:db8::7", 65535, False, None, None),
    (":1885", "127.0.0.1", 1885, False, None, None),
    ("  h:1  ", "h", 1, False, None, None),
])
def test_parse_broker_url(url, host, port, tls, user, password):
    u = parse_broker_url(url)
    assert (u.host, u.port, u.tls, u.username, u.password) == (host, port, tls, user, password)
    again = parse_broker_url(str(u))          # str() is the URL form and reads back the same
    assert (again.host, again.port, again.tls) == (host, port, tls)


def test_an_ipv6_broker_prints_in_brackets():
    assert str(parse_broker_url("[::1]:1883")) == "mqtt://[::1]:1883"
    assert str(parse_broker_url("mqtts://[fe80::1%25eth0]")) == "mqtts://[fe80::1%25eth0]:8883"


@pytest.mark.parametrize("url, named", [
    ("http://h:1", "'http'"), ("mqtt://", "no host"), ("mqtt://h/topic", "only a host"), ("mqtt://h?x=1", "only"),
    ("mqtt://h:99999", "'99999'"), ("mqtt://h:x", "'x'"), ("mqtt://h:0", "'0'"), ("mqtt://h:", "''"),
    ("h:99999", "'99999'"), ("h:0", "'0'"), ("h:-1", "'-1'"), ("h: 1", "' 1'"), ("[::1]:x", "'x'"),
    ("[::1]:70000", "'70000'"), ("h:١٢", "'١٢'"),                  # non-ASCII digits are not a port
    ("::1", "brackets"), ("::1:1883", "brackets"), ("[::1", "']'"), ("[nope]:1", "'nope'"),
    ("[::1]1883", "'1883'"), ("user@h:1", "URL form"), ("h:1/x", "URL form"), ("a b:1", "'a b'"),
    ("", "''"), ("   ", "'   '"), (None, "None"),
])
def test_bad_broker_addresses_are_usage_errors_naming_the_value(url, named):
    with pytest.raises(UsageError) as err:
        parse_broker_url(url)
    assert err.value.code == "usage.broker_url" and err.value.exit_code == 2
    assert named in err.value.message, err.value.message
    assert err.value.hint


@pytest.mark.parametrize("device", ["cam1", "a_b-c", "X" * 64, "0", "rack7_cam-02"])
def test_good_device_ids(device):
    assert check_device_id(device) == device


@pytest.mark.parametrize("device, named", [
    ("a.b", "'.'"), ("a/b", "'/'"), ("a+b", "'+'"), ("#", "'#'"), ("sp ace", "' '"), ("é", "'é'"),
    ("tab\there", "U+0009"), ("nul\x00", "U+0000"), ("line\n", "U+000A"), ("-lead", "'-'"),
    ("_lead", "'_'"), ("x" * 65, "65 characters"), ("", "non-empty"), (None, "non-empty"),
])
def test_bad_device_ids_name_the_bad_character(device, named):
    with pytest.raises(UsageError) as err:
        check_device_id(device)
    assert err.value.code == "usage.device_id" and err.value.exit_code == 2
    assert named in err.value.message, err.value.message
    assert "A-Z a-z 0-9 _ -" in err.value.hint


def test_daemon_config_checks_the_device_id_once_loaded(tmp_path):
    from edge.daemon import config as cfgmod
    path = tmp_path / "d.toml"
    path.write_text('device_id = "cam.1"\n[model]\npath = "m.onnx"\n')
    with pytest.raises(UsageError) as err:
        cfgmod.load_toml(path).require_model()
    assert err.value.code == "usage.device_id" and "'.'" in err.value.message
    path.write_text('device_id = "cam_1"\n[model]\npath = "m.onnx"\n')
    assert cfgmod.load_toml(path).require_model().device_id == "cam_1"


def test_config_from_dict_refuses_unknown_keys_and_bad_values():
    cfg = TelemetryConfig.from_dict({"broker": "mqtt://h:1", "keepalive": 10, "command_keys": "k.pub"})
    assert cfg.command_keys == ("k.pub",) and cfg.url.port == 1
    assert (cfg.input_receive_max, cfg.input_session_expiry) == (64, 86400)
    assert TelemetryConfig.from_dict({"input_receive_max": 8}).input_receive_max == 8
    assert TelemetryConfig(input_receive_max=8).input_held_limit == 32         # 4 x the window
    assert TelemetryConfig(input_receive_max=8, input_max_held=8).input_held_limit == 8
    with pytest.raises(UsageError, match="keepalive_s"):
        TelemetryConfig.from_dict({"keepalive_s": 10})
    for bad in ({"keepalive": 1}, {"inflight": 0}, {"spool_sync": "off"}, {"cert_file": "c.pem"},
                {"ca_file": "ca.pem"}, {"spool_max_records": 1}, {"input_receive_max": 0},
                {"input_receive_max": 65536}, {"input_session_expiry": 0},
                {"input_receive_max": 8, "input_max_held": 7}, {"input_max_held": 1_000_001}):
        with pytest.raises(UsageError):
            TelemetryConfig(**bad)


def test_topics_and_envelope():
    assert device_topic("d", "metrics") == "ganglion/v1/d/metrics"
    assert device_topic("d", "results", "mnv2") == "ganglion/v1/d/results/mnv2"
    assert device_topic("d", "results", "mnv2.1") == "ganglion/v1/d/results/mnv2_1"     # NATS-safe level
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


@pytest.mark.parametrize("table, urls", [
    ({"broker": "mqtt://a:1"}, ["mqtt://a:1"]),
    ({"brokers": ["mqtt://a:1", "b:2"]}, ["mqtt://a:1", "mqtt://b:2"]),
    ({"brokers": "mqtt://a:1"}, ["mqtt://a:1"]),
    ({"broker": "mqtt://a:1", "brokers": ["mqtt://a:1", "mqtt://b:2"]}, ["mqtt://a:1", "mqtt://b:2"]),
])
def test_the_failover_list(table, urls):
    cfg = TelemetryConfig.from_dict(table)
    assert [str(u) for u in cfg.broker_urls] == urls and str(cfg.url) == urls[0]


@pytest.mark.parametrize("table, where", [
    ({"broker": "mqtt://c:1", "brokers": ["mqtt://a:1", "mqtt://b:2"]}, "telemetry.brokers"),
    ({"brokers": ["mqtt://a:1", "a:1"]}, "telemetry.brokers"),
    ({"brokers": ["mqtt://a:1", "nope://b"]}, None),
    ({"brokers": ["mqtt://a:1"], "broker_failback_s": 0}, "telemetry.broker_failback_s"),
])
def test_a_bad_failover_list_is_a_usage_error(table, where):
    with pytest.raises(UsageError) as err:
        TelemetryConfig.from_dict(table)
    assert where is None or err.value.where == where
