"""Firmware rollouts end to end: ``fleet deploy BUNDLE.fw`` with a real mosquitto, hub and simulator.

The bundle is a real signed one (``firmware build`` via tests/firmware/helpers.py: a tiny model, a
config and one small wheel; about 0.3 s to build). The simulator verifies it like a device and
stubs the slot: validated, or with ``--fail-mode revert`` reverted.
"""
import json

import pytest

from fleet.bundles import kind_of, read_upload
from tests.firmware import helpers
from tests.fleet.procs import hub_client, make_artifact, wait_for
from tests.fleet.test_rollouts import devices_seen, finished

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fw")
    private, public = helpers.keypair(folder)
    other_private, other_public = helpers.keypair(folder, "other")
    wheelhouse = folder / "wheels"
    wheelhouse.mkdir()
    helpers.make_wheel(wheelhouse, "ganglion_probe", "1.0", {"ganglion_probe/__init__.py": "VALUE = 42\n"})
    return {"bundle": helpers.bundle(folder / "good", private, "2.0.0", wheelhouse=wheelhouse),
            "foreign": helpers.bundle(folder / "foreign", other_private, "2.0.0", wheelhouse=wheelhouse),
            "public": public}


def firmware_versions(client):
    return {r["id"]: r["firmware_version"] for r in client.call("devices")["devices"]}


def test_uploads_are_told_apart_by_name_then_content(fw, tmp_path):
    renamed = tmp_path / "upload.bin"
    renamed.write_bytes(fw["bundle"].read_bytes())
    art = make_artifact(tmp_path / "m.gpk", "2.0")
    assert (kind_of(fw["bundle"], None), kind_of(renamed, None), kind_of(art, "m.gpk")) == \
        ("firmware", "firmware", "model")
    assert read_upload(renamed, None, firmware_keys=[fw["public"]])["version"] == "2.0.0"
    with pytest.raises(Exception) as err:
        read_upload(fw["foreign"], "app.fw", firmware_keys=[fw["public"]])
    assert err.value.code.startswith("signature.")


def test_a_firmware_rollout_completes_when_every_slot_validates(procs, fw):
    key = ("--firmware-trusted-key", str(fw["public"]))
    procs.hub(*key)
    procs.sim(6, "sim", *key)
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 6), what="6 devices online")
        assert set(firmware_versions(client).values()) == {"1.0.0"}
        out = procs.cli("deploy", str(fw["bundle"]), "--waves", "34,100", "--json")
        dep_id = json.loads(out.stdout)["id"]
        st = wait_for(lambda: finished(procs, dep_id), what="the firmware rollout to finish")
        assert st["kind"] == "firmware" and st["version"] == "2.0.0"
        assert st["counts"] == {"updated": 6}
        assert set(firmware_versions(client).values()) == {"2.0.0"}
        events = client.call("device", {"id": "sim-0"})["events"]
        assert [e["phase"] for e in events if e.get("event") == "firmware"][-2:] == ["installed", "validated"]
        assert "bundle firmware:x86_64-generic 2.0.0" in procs.cli("status", dep_id).stdout


def test_a_firmware_rollout_whose_slots_revert_halts(procs, fw):
    key = ("--firmware-trusted-key", str(fw["public"]))
    procs.hub(*key)
    procs.sim(10, "sim", *key, "--fail-rate", "0.5", "--fail-mode", "revert")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 10), what="10 devices online")
        dep_id = procs.cli("deploy", str(fw["bundle"]), "--waves", "20,60,100", "--max-failures", "5%").stdout.strip()
        st = wait_for(lambda: finished(procs, dep_id, ("halted",)), what="the firmware rollout to halt")
        inside = [m for m in st["devices"] if m["wave"] == st["wave"]]
        later = [m for m in st["devices"] if m["wave"] > st["wave"]]
        versions = firmware_versions(client)
        failed = [m for m in inside if m["state"] == "failed"]
        kept = [m for m in inside if m["state"] == "rollback_failed"]
        assert st["rollback"] == "wave" and failed and len(failed) + len(kept) == len(inside)
        assert all("reverted" in m["error"] and versions[m["device"]] == "1.0.0" for m in failed)
        assert all("kept the new firmware" in m["error"] and versions[m["device"]] == "2.0.0" for m in kept)
        assert later and {m["state"] for m in later} == {"pending"}        # nobody outside was touched
        assert all(versions[m["device"]] == "1.0.0" for m in later)


def test_the_hub_refuses_a_bundle_its_firmware_keys_did_not_sign(procs, fw):
    procs.hub("--firmware-trusted-key", str(fw["public"]))
    procs.sim(2, "sim", "--firmware-trusted-key", str(fw["public"]))
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 2), what="2 devices online")
        out = procs.cli("deploy", str(fw["foreign"]), check=False)
        assert out.returncode != 0 and "signature" in out.stderr
        assert "no deployment yet" in procs.cli("status", check=False).stderr      # nothing was created
