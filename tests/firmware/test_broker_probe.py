"""The health check's broker probe: mqtt:// and mqtts:// URLs (default ports 1883/8883), the
older host:port form, TLS against a real mosquitto with a throw-away CA, and the daemon hook
that hands the daemon's own telemetry settings to ``validate``."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.errors import UsageError
from edge.daemon.config import DaemonTelemetry
from edge.cli import main
from firmware import broker_probe as probe_mod
from firmware import selftest
from firmware.daemon_hook import broker_probe
from firmware.errors import HealthCheckError
from firmware.install import install
from firmware.status import status
from firmware.validate import broker_address, validate
from tests.fixtures.broker import make_tls_files


def in_process(slot, ctx):
    return selftest.run_slot(slot)


def tls_of(broker) -> dict:
    return {"ca_file": broker.ca_file, "cert_file": broker.client_cert, "key_file": broker.client_key}


@pytest.mark.parametrize("broker, expected", [
    ("mqtt://broker.local", ("broker.local", 1883, False)),
    ("mqtts://broker.local", ("broker.local", 8883, True)),
    ("mqtts://user:pw@broker.local", ("broker.local", 8883, True)),
    ("mqtts://broker.local:9883", ("broker.local", 9883, True)),
    ("MQTTS://broker.local", ("broker.local", 8883, True)),
    ("broker.local", ("broker.local", 1883, False)),          # the older host[:port] form stays plain
    ("broker.local:1884", ("broker.local", 1884, False)),
    (":1885", ("127.0.0.1", 1885, False)),
])
def test_default_port_follows_the_scheme(broker, expected):
    url = broker_address(broker)
    assert (url.host, url.port, url.tls) == expected


@pytest.mark.parametrize("broker", ["http://h", "mqtt://h:99999", "mqtt://h/path", "h:port"])
def test_an_unreadable_broker_is_a_usage_error(broker):
    with pytest.raises(UsageError):
        broker_address(broker)


def test_mqtts_without_a_port_dials_8883(monkeypatch):
    dialed = []

    def fake_connect(address, timeout):          # records where it would dial; refuses like a closed port
        dialed.append(address)
        raise ConnectionRefusedError("refused")
    monkeypatch.setattr(probe_mod.socket, "create_connection", fake_connect)
    for broker, address in [("mqtts://10.0.0.5", ("10.0.0.5", 8883)), ("mqtt://10.0.0.5", ("10.0.0.5", 1883))]:
        with pytest.raises(HealthCheckError) as err:
            probe_mod.check_broker(None, {"broker_url": broker_address(broker)})
        assert dialed[-1] == address and err.value.code == "firmware.broker"


@pytest.mark.mqtt
def test_mqtts_with_the_ca_passes_against_the_tls_broker(root, make_bundle, fw_keys, mosquitto_tls):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=mosquitto_tls.url, broker_tls=tls_of(mosquitto_tls))
    assert report["ok"], report
    assert report["checks"]["broker"] == "broker answered CONNACK over TLS"
    assert status(root)["slots"]["a"]["status"] == "valid"


@pytest.mark.mqtt
def test_a_wrong_ca_fails_with_a_clear_error_and_reverts(root, make_bundle, fw_keys, mosquitto_tls, tmp_path):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert validate(root, runner=in_process, broker=mosquitto_tls.url, broker_tls=tls_of(mosquitto_tls))["ok"]
    other = make_tls_files(tmp_path / "other", client=False)
    wrong = {**tls_of(mosquitto_tls), "ca_file": str(other["ca"])}
    url = broker_address(mosquitto_tls.url)
    with pytest.raises(HealthCheckError) as err:
        probe_mod.check_broker(None, {"broker_url": url, "broker_tls": wrong})
    assert err.value.code == "firmware.broker_tls" and "certificate verify failed" in err.value.message
    assert "CA" in err.value.hint
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=mosquitto_tls.url, broker_tls=wrong)
    assert not report["ok"] and report["failed_check"] == "broker"
    assert "certificate verify failed" in report["reason"] and report["revert"]["to"] == "a"


@pytest.mark.mqtt
def test_plain_tcp_to_the_tls_port_fails_and_a_missing_ca_file_is_typed(mosquitto_tls, tmp_path):
    url = broker_address(mosquitto_tls.url)
    plain = broker_address(f"mqtt://{url.host}:{url.port}")     # the old behaviour, against a TLS-only broker
    with pytest.raises(HealthCheckError):
        probe_mod.check_broker(None, {"broker_url": plain})
    with pytest.raises(HealthCheckError) as err:
        probe_mod.check_broker(None, {"broker_url": url, "broker_tls": {"ca_file": str(tmp_path / "no.crt")}})
    assert err.value.code == "firmware.broker_tls"


@pytest.mark.mqtt
def test_a_plain_broker_by_url_and_by_host_port(root, make_bundle, fw_keys, mosquitto):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=mosquitto.url)
    assert report["ok"] and report["checks"]["broker"] == "broker answered CONNACK"
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=f"{mosquitto.host}:{mosquitto.port}")
    assert report["ok"] and report["checks"]["broker"] == "broker answered CONNACK"


def test_tls_files_with_a_plain_broker_are_refused_before_any_check(root, make_bundle, fw_keys, tmp_path):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    with pytest.raises(UsageError):
        validate(root, runner=in_process, broker="mqtt://127.0.0.1:1", broker_tls={"ca_file": "ca.crt"})
    with pytest.raises(UsageError):
        validate(root, runner=in_process, broker="mqtt://127.0.0.1:notaport")
    assert status(root)["slots"]["a"]["status"] == "unvalidated"      # a typo reverts nothing


@pytest.mark.mqtt
def test_cli_validate_accepts_an_mqtts_url_with_tls_files(root, make_bundle, fw_keys, mosquitto_tls, capsys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert main(["firmware", "validate", "--root", str(root), "--broker", mosquitto_tls.url,
                 "--broker-ca", mosquitto_tls.ca_file, "--broker-cert", mosquitto_tls.client_cert,
                 "--broker-key", mosquitto_tls.client_key, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checks"]["broker"] == "broker answered CONNACK over TLS"


def test_daemon_hook_passes_the_telemetry_url_tls_files_and_credentials():
    from edge.daemon.config import DaemonTelemetry
    from firmware.daemon_hook import broker_probe
    assert broker_probe(DaemonTelemetry()) == {}
    assert broker_probe(DaemonTelemetry(broker="mqtt://user:pw@h", spool="/tmp/s.db")) == {
        "broker": "mqtt://user:pw@h", "broker_tls": None, "broker_auth": None}
    opts = broker_probe(DaemonTelemetry(broker="mqtts://h", ca_file="ca.crt", cert_file="c.crt",
                                        key_file="c.key", spool="/tmp/s.db", username="dev", password="pw"))
    assert broker_address(opts["broker"]).port == 8883
    assert opts["broker_tls"] == {"ca_file": "ca.crt", "cert_file": "c.crt", "key_file": "c.key"}
    assert opts["broker_auth"] == {"username": "dev", "password": "pw"}


def test_firmware_validate_imports_without_paho():
    code = ("import sys; sys.modules['paho'] = None\n"
            "from firmware.validate import broker_address, validate\n"
            "print(broker_address('mqtts://h').port, 'paho.mqtt.client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8883", "False"]


def test_the_probe_falls_back_to_311_on_a_broker_without_mqtt5(nats_cluster, mosquitto, tmp_path):
    # NATS answers the MQTT 5 CONNECT with 0x01 'unacceptable protocol version': asked again in 3.1.1
    assert probe_mod.check_broker(tmp_path, {"broker": nats_cluster.urls[2]}) == \
        "broker answered CONNACK (MQTT 3.1.1)"
    assert probe_mod.check_broker(tmp_path, {"broker": mosquitto.url}) == "broker answered CONNACK"
    assert probe_mod._connect_packet(level=4)[2:10] == b"\x00\x04MQTT\x04\x02"      # 3.1.1: level 4


@pytest.mark.mqtt
def test_a_failover_list_passes_when_one_broker_answers(root, make_bundle, fw_keys, mosquitto):
    from tests.fixtures.broker import free_port
    dead = f"mqtt://127.0.0.1:{free_port()}"
    telemetry = DaemonTelemetry.from_dict({"brokers": [dead, mosquitto.url]})
    assert broker_probe(telemetry)["broker"] == [dead, mosquitto.url]
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=[dead, mosquitto.url])
    assert report["ok"] and report["checks"]["broker"].startswith("broker answered CONNACK (mqtt://127.0.0.1:")
    with pytest.raises(HealthCheckError, match="no broker of the list answered"):
        probe_mod.check_broker(root, {"broker_urls": [broker_address(dead), broker_address(f"mqtt://127.0.0.1:{free_port()}")]})
