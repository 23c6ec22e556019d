"""Signing by default: the tools sign every command whenever a command key exists (--signing-key,
$GANGLION_COMMAND_KEY, the default file), and a device without command keys warns at start."""
import json
import logging
import os
import subprocess
import sys

import pytest

from edge.telemetry import Telemetry, TelemetryConfig
from edge.telemetry.requester import Requester
from edge.telemetry.signing import default_key_path, find_command_key
from core import keys

pytestmark = pytest.mark.mqtt


def _send(*args, env):
    return subprocess.run([sys.executable, "-m", "edge.cli", "telemetry", "send", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_find_command_key_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("GANGLION_COMMAND_KEY", raising=False)
    assert find_command_key() is None                         # no key anywhere: unsigned
    default = default_key_path()
    default.parent.mkdir(parents=True)
    default.write_text("x")
    assert find_command_key() == default
    monkeypatch.setenv("GANGLION_COMMAND_KEY", "/env/ops.key")
    assert str(find_command_key()) == "/env/ops.key"
    assert str(find_command_key("flag.key")) == "flag.key"


@pytest.mark.parametrize("where", ["env", "default-file"])
def test_send_signs_with_the_key_it_finds(mosquitto, tmp_path, where):
    priv, pub = keys.generate(tmp_path / "ops.key")
    env = dict(os.environ, GANGLION_BROKER="", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    env.pop("GANGLION_COMMAND_KEY", None)
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url, command_keys=(str(pub),)), "signdev", tmp_path / "s.db")
    tm.start()
    try:
        assert tm.wait_connected(10)
        unsigned = _send("signdev", "ping", "--broker", mosquitto.url, env=env)
        assert unsigned.returncode == 6 and "command.unauthorized" in unsigned.stderr
        if where == "env":
            env["GANGLION_COMMAND_KEY"] = str(priv)
        else:
            (tmp_path / "cfg" / "ganglion").mkdir(parents=True)
            (tmp_path / "cfg" / "ganglion" / "command.key").write_bytes(priv.read_bytes())
        signed = _send("signdev", "ping", "--broker", mosquitto.url, env=env)
        assert signed.returncode == 0, signed.stderr
        assert json.loads(signed.stdout)["result"]["pong"] is True
    finally:
        tm.stop(flush_timeout=0.5)


def test_a_requester_key_signs_every_call(mosquitto, tmp_path):
    priv, pub = keys.generate(tmp_path / "ops.key")
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url, command_keys=(str(pub),)), "reqkey", tmp_path / "s.db")
    tm.register_transfer("deploy", lambda path, info, args: {"size": path.stat().st_size})
    tm.start()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(20_000))
    try:
        assert tm.wait_connected(10)
        with Requester(mosquitto.url, key=keys.load_private(priv)) as req:
            assert req.call("reqkey", "ping")["ok"]
            assert req.send_file("reqkey", "deploy", blob, chunk_size=4096)["result"] == {"size": 20_000}
    finally:
        tm.stop(flush_timeout=0.5)


@pytest.mark.parametrize("signed", [False, True])
def test_a_device_without_command_keys_warns_at_start(mosquitto, tmp_path, caplog, signed):
    _, pub = keys.generate(tmp_path / "ops.key")
    cfg = TelemetryConfig(broker=mosquitto.url, command_keys=(str(pub),) if signed else ())
    caplog.set_level(logging.WARNING, logger="ganglion.telemetry")
    tm = Telemetry(cfg, "warndev", tmp_path / "s.db").start()
    try:
        assert tm.wait_connected(10)
        warned = [r.getMessage() for r in caplog.records if "COMMANDS ARE NOT SIGNED" in r.getMessage()]
        assert len(warned) == (0 if signed else 1)
        assert not warned or "ganglion/v1/warndev/cmd/#" in warned[0]
        assert tm._status_cmd({})["status"]["commands"] == ("signed" if signed else "unsigned")
    finally:
        tm.stop(flush_timeout=0.5)
