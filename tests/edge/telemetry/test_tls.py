"""TLS: a mosquitto listener with a throw-away CA that requires client certificates."""
import pytest

from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.config import parse_broker_url
from edge.telemetry.errors import BrokerError
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester
from tests.fixtures.broker import make_tls_files

pytestmark = pytest.mark.mqtt


def test_device_talks_over_mutual_tls(mosquitto_tls, tmp_path):
    assert mosquitto_tls.url.startswith("mqtts://")
    tls = dict(ca_file=mosquitto_tls.ca_file, cert_file=mosquitto_tls.client_cert, key_file=mosquitto_tls.client_key)
    tm = Telemetry(TelemetryConfig(broker=mosquitto_tls.url, **tls), "secure1", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(10), tm.client.last_error
        seq = tm.record("metrics", {"ok": 1})
        assert tm.flush(10) and seq == 1
        with Requester(mosquitto_tls.url, **tls) as req:
            assert req.call("secure1", "ping")["ok"]
    finally:
        tm.stop(flush_timeout=0.5)


def test_tls_refusals(mosquitto_tls, tmp_path):
    url = parse_broker_url(mosquitto_tls.url)
    # no client certificate: the broker requires one
    with pytest.raises(BrokerError):
        MqttClient(url, client_id="nocert", ca_file=mosquitto_tls.ca_file, reconnect_max=1).connect(timeout=2)
    # a CA we do not trust signed the server certificate
    other = make_tls_files(tmp_path / "other", client=False)
    with pytest.raises(BrokerError) as err:
        MqttClient(url, client_id="wrongca", ca_file=str(other["ca"]), cert_file=mosquitto_tls.client_cert,
                   key_file=mosquitto_tls.client_key, reconnect_max=1).connect(timeout=2)
    assert err.value.code == "telemetry.tls" and "certificate verify failed" in err.value.message
    # a CA file that does not exist is a typed error before any connection
    with pytest.raises(BrokerError) as err:
        MqttClient(url, client_id="x", ca_file=str(tmp_path / "missing.crt"))
    assert err.value.code == "telemetry.tls"


def test_username_password(mosquitto_auth, tmp_path):
    url = parse_broker_url(mosquitto_auth.url)
    with pytest.raises(BrokerError) as err:
        MqttClient(url, client_id="anon", reconnect_max=1).connect(timeout=2)
    assert "Not authorized" in err.value.message or "Bad user name" in err.value.message
    with pytest.raises(BrokerError):
        MqttClient(url, client_id="wrong", username="device", password="nope", reconnect_max=1).connect(timeout=2)
    user_in_url = mosquitto_auth.url.replace("mqtt://", "mqtt://device:s3cret@")
    tm = Telemetry(TelemetryConfig(broker=user_in_url), "authed", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(10)
        assert "s3cret" not in repr(TelemetryConfig(broker=mosquitto_auth.url, username="device", password="s3cret"))
        with Requester(mosquitto_auth.url, username="device", password="s3cret") as req:
            assert req.call("authed", "ping")["ok"]
    finally:
        tm.stop(flush_timeout=0.5)
