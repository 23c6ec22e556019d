"""OTA: ``deploy-firmware`` installs a received bundle, validates it, and reports every phase.

The first tests call the handler directly with an event list; the last one sends a real bundle in
chunks through a real mosquitto (telemetry's transfer + requester), interrupted and resumed, and
reads the outcome both from the command reply and from the device's ``events`` topic.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading

import pytest

from firmware import ota
from firmware.errors import InstallError
from firmware.status import status


def phases(events):
    return [e["phase"] for e in events if e.get("event") == "firmware"]


def test_deploy_installs_validates_and_reports_each_phase(root, make_bundle, fw_keys):
    events = []
    reply = ota.deploy_firmware(make_bundle("2.0.0"), root, fw_keys["public"], events.append)
    assert reply == {"outcome": "validated", "version": "2.0.0", "slot": "a", "restart": True}
    got = phases(events)
    assert got[0] == "installing" and got[-2:] == ["installed", "validated"]
    progress = [e for e in events if e["phase"] == "progress"]
    # 4 fixed members + 3 test wheels + Ganglion's own device wheel
    assert progress[-1]["done"] == progress[-1]["total"] == 8
    assert status(root)["slots"]["a"]["status"] == "valid"


def test_a_failing_bundle_is_reverted_reported_and_then_refused(root, make_bundle, fw_keys,
                                                                broken_runtime_wheelhouse):
    ota.deploy_firmware(make_bundle("2.0.0"), root, fw_keys["public"], lambda e: None)
    bad = make_bundle("2.1.0", wheels=broken_runtime_wheelhouse)
    events = []
    reply = ota.deploy_firmware(bad, root, fw_keys["public"], events.append)
    assert reply["outcome"] == "reverted" and reply["failed_check"] == "selftest"
    assert phases(events)[-1] == "reverted"
    assert status(root)["active"] == "a"
    again = []
    with pytest.raises(InstallError) as info:       # not even force gets a failed version back in
        ota.deploy_firmware(bad, root, fw_keys["public"], again.append, force=True)
    assert info.value.code == "firmware.failed_version"
    assert phases(again) == ["refused"]


def test_a_tampered_bundle_is_refused_with_an_event(root, make_bundle, fw_keys, tmp_path):
    data = bytearray(make_bundle("2.0.0").read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.fw"
    bad.write_bytes(bytes(data))
    events = []
    with pytest.raises(Exception):
        ota.deploy_firmware(bad, root, fw_keys["public"], events.append)
    assert phases(events) == ["refused"] and events[0]["error"]["code"]
    assert not (root / "ganglion").exists()


@pytest.mark.mqtt
def test_deploy_over_mqtt_with_interrupted_and_resumed_chunks(mosquitto, tmp_path, root, make_bundle, fw_keys):
    from edge.telemetry import Telemetry, TelemetryConfig
    from edge.telemetry.mqtt import MqttClient
    from edge.telemetry.config import parse_broker_url
    from edge.telemetry.requester import Requester

    bundle = make_bundle("3.0.0")
    tm = Telemetry(TelemetryConfig(broker=mosquitto.url), "fw-dev", tmp_path / "spool.db")
    ota.register(tm, root, fw_keys["public"])
    seen, validated = [], threading.Event()

    def on_event(message):
        record = json.loads(message.payload)
        seen.append(record["data"])
        if record["data"].get("phase") == "validated":
            validated.set()
    watcher = MqttClient(parse_broker_url(mosquitto.url), client_id="fw-watch")
    watcher.subscribe("ganglion/v1/fw-dev/events", on_event)
    watcher.connect()
    tm.start()
    try:
        assert tm.wait_connected(10)
        data = bundle.read_bytes()
        digest, chunk = hashlib.sha256(data).hexdigest(), 4096
        with Requester(mosquitto.url) as req:
            # a sender that dies after two chunks ...
            begin = req.call("fw-dev", "deploy-firmware.begin", {"sha256": digest, "size": len(data),
                                                                  "chunk_size": chunk})
            assert begin["ok"] and begin["result"]["chunks"] > 3
            for index in (0, 1):
                piece = data[index * chunk:(index + 1) * chunk]
                assert req.call("fw-dev", "deploy-firmware.chunk", {
                    "transfer": digest, "index": index, "data": base64.b64encode(piece).decode(),
                    "sha256": hashlib.sha256(piece).hexdigest()})["ok"]
            # ... and a new one that resumes: begin reports the two chunks the device holds
            reply = req.send_file("fw-dev", "deploy-firmware", bundle, chunk_size=chunk, timeout=60)
        assert reply["ok"], reply
        assert reply["result"]["outcome"] == "validated" and reply["result"]["version"] == "3.0.0"
        assert validated.wait(10), seen
        assert [e["phase"] for e in seen][0] == "installing"
        assert status(root)["slots"]["a"]["status"] == "valid"
    finally:
        watcher.stop()
        tm.stop(flush_timeout=1)


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on a free loopback port serving one folder."""
    import functools
    import http.server
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_deploy_from_a_url_checks_the_announced_sha256(root, make_bundle, fw_keys, http_folder):
    folder, base = http_folder
    bundle = make_bundle("4.0.0")
    (folder / "app.fw").write_bytes(bundle.read_bytes())
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    events = []
    handler = ota.url_handler(root, fw_keys["public"], events.append)
    from core.errors import FirmwareError
    for args, code in [({"url": f"{base}/app.fw", "sha256": "0" * 64}, "firmware.hash"),
                       ({"url": f"file://{bundle}", "sha256": digest}, "firmware.url"),
                       ({"url": f"{base}/missing.fw", "sha256": digest}, "firmware.download"),
                       ({"url": f"{base}/app.fw", "sha256": "xyz"}, "firmware.url")]:
        with pytest.raises(FirmwareError) as info:
            handler(args)
        assert info.value.code == code
    assert not (root / "ganglion/slots").exists()
    reply = handler({"url": f"{base}/app.fw", "sha256": digest})
    assert reply["outcome"] == "validated" and reply["version"] == "4.0.0"
    assert list((root / "ganglion/downloads").iterdir()) == []       # the download is not kept
    assert phases(events).count("refused") == 4
