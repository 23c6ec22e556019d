"""The broker check logs in like telemetry: user name and password against a real mosquitto that
refuses anonymous clients. The right password passes; a wrong one or none fails with the CONNACK
reason named (``firmware.broker_auth``), never as "not reachable"; the slot is reverted and the
version counted as a transient failure (the broker's users may change), not refused for good."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from edge.cli import main
from firmware import broker_probe
from firmware import selftest
from firmware.errors import HealthCheckError
from firmware.install import install
from firmware.status import status
from firmware.validate import validate

pytestmark = pytest.mark.mqtt
RIGHT = {"username": "device", "password": "s3cret"}


def in_process(slot, ctx):
    return selftest.run_slot(slot)


def probe(url: str, auth: dict | None):
    return broker_probe.check_broker(None, {"broker_url": broker_probe.broker_address(url), "broker_auth": auth})


def test_the_right_password_passes(mosquitto_auth):
    assert probe(mosquitto_auth.url, RIGHT) == "broker answered CONNACK as 'device'"


def test_credentials_in_the_url_are_used_as_telemetry_uses_them(mosquitto_auth):
    url = f"mqtt://device:s3cret@{mosquitto_auth.host}:{mosquitto_auth.port}"
    assert probe(url, None) == "broker answered CONNACK as 'device'"
    with pytest.raises(HealthCheckError) as err:         # an explicit password wins over the URL's
        probe(url, {"username": None, "password": "nope"})
    assert err.value.code == "firmware.broker_auth"


@pytest.mark.parametrize("auth, who", [
    ({"username": "device", "password": "wrong"}, "user 'device'"),
    ({"username": "nobody", "password": "s3cret"}, "user 'nobody'"),
    (None, "no user name or password"),
])
def test_wrong_or_missing_credentials_name_the_connack_reason(mosquitto_auth, auth, who):
    with pytest.raises(HealthCheckError) as err:
        probe(mosquitto_auth.url, auth)
    exc = err.value
    assert exc.code == "firmware.broker_auth"
    assert "refused the credentials" in exc.message and who in exc.message
    assert "CONNACK reason 0x87 'not authorized'" in exc.message      # what mosquitto 2.0 answers
    assert "not reachable" not in exc.message and "username/password" in exc.hint
    assert "wrong" not in exc.message and "s3cret" not in exc.message   # never echo a password


def test_validate_with_the_right_password_marks_the_slot_valid(root, make_bundle, fw_keys, mosquitto_auth):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=mosquitto_auth.url, broker_auth=RIGHT)
    assert report["ok"], report
    assert status(root)["slots"]["a"]["status"] == "valid"


@pytest.mark.parametrize("auth", [{"username": "device", "password": "wrong"}, None])
def test_validate_with_a_refused_login_reverts_with_the_reason(root, make_bundle, fw_keys, mosquitto_auth, auth):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert validate(root, runner=in_process, broker=mosquitto_auth.url, broker_auth=RIGHT)["ok"]
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=mosquitto_auth.url, broker_auth=auth)
    assert not report["ok"] and report["failed_check"] == "broker"
    assert report["error_code"] == "firmware.broker_auth" and "not authorized" in report["reason"]
    assert report["failure_class"] == "transient" and report["revert"]["to"] == "a"
    info = status(root)
    assert info["active"] == "a" and info["retries"]["1.1.0"]["count"] == 1
    assert "1.1.0" not in info["failed_versions"]


def test_cli_validate_takes_username_and_password_file(root, make_bundle, fw_keys, mosquitto_auth, tmp_path,
                                                       capsys, monkeypatch):
    monkeypatch.delenv("GANGLION_MQTT_PASSWORD", raising=False)
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret\n")
    assert main(["firmware", "validate", "--root", str(root), "--broker", mosquitto_auth.url,
                 "--broker-username", "device", "--broker-password-file", str(secret), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checks"]["broker"] == "broker answered CONNACK as 'device'"


def test_cli_validate_with_a_wrong_password_exits_5_and_says_why(root, make_bundle, fw_keys, mosquitto_auth,
                                                                  capsys, monkeypatch):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert main(["firmware", "validate", "--root", str(root), "--broker", mosquitto_auth.url,
                 "--broker-username", "device", "--broker-password", "s3cret"]) == 0
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    monkeypatch.setenv("GANGLION_MQTT_PASSWORD", "wrong")
    code = main(["firmware", "validate", "--root", str(root), "--broker", mosquitto_auth.url,
                 "--broker-username", "device"])
    out = capsys.readouterr()
    assert code == 5
    assert "FAILED the broker check (transient)" in out.out and "refused the credentials (user 'device')" in out.out


class OneShotBroker:
    """A loopback socket that answers any CONNECT with one fixed reply (a broker that is up but
    says no for a reason mosquitto cannot be made to give on demand)."""

    def __init__(self, reply: bytes):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(self.reply)

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("reply, code, words", [
    (b"\x20\x03\x00\x88\x00", "firmware.broker_refused", "0x88 'server unavailable'"),
    (b"\x20\x03\x00\x86\x00", "firmware.broker_auth", "0x86 'bad user name or password'"),
    (b"\x20\x02\x00\x04", "firmware.broker_auth", "0x04 'bad user name or password'"),   # an MQTT 3.1.1 broker
    (b"\x30\x02\x00\x00", "firmware.broker", "did not answer CONNECT with CONNACK"),
    (b"", "firmware.broker", "closed the connection"),
])
def test_each_kind_of_refusal_has_its_own_code(reply, code, words):
    fake = OneShotBroker(reply)
    try:
        with pytest.raises(HealthCheckError) as err:
            probe(fake.url, RIGHT)
    finally:
        fake.close()
    assert err.value.code == code and words in err.value.message
