"""Rollouts end to end: a real mosquitto, the hub and the simulator as real processes, the CLI.

Scenarios of issue 12: a rollout completes; injected failures halt it and roll the wave back; a
hub SIGKILLed mid-rollout resumes after a restart; an offline device gets the update when it
returns; devices refuse unsigned and foreign commands when command keys are configured.
"""
import json
import time

import pytest

from edge.telemetry.requester import Requester
from core import keys
from tests.fleet.procs import hub_client, make_artifact, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def devices_seen(client, n, prefix=None, online=True):
    rows = client.call("devices", {"online": online, "prefix": prefix})["devices"]
    return len(rows) >= n and rows


def status(procs, dep_id=None):
    return json.loads(procs.cli("status", *([dep_id] if dep_id else []), "--json").stdout)


def finished(procs, dep_id, states=("done",)):
    st = status(procs, dep_id)
    busy = {"sending", "verifying", "rolling_back"} & set(st["counts"])
    return st if st["state"] in states and not busy else None


def test_signed_rollout_completes_and_devices_refuse_unsigned_commands(procs, tmp_path):
    hub_key, hub_pub = keys.generate(tmp_path / "hub.key")
    other_key, _ = keys.generate(tmp_path / "other.key")
    procs.hub("--signing-key", str(hub_key))
    procs.sim(12, "sim", "--command-key", str(hub_pub), "--tag", "site=lab")
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 12), what="12 devices online")
        out = procs.cli("deploy", str(art), "--to", "tag:site=lab", "--waves", "10,50,100", "--json")
        dep_id = json.loads(out.stdout)["id"]
        st = wait_for(lambda: finished(procs, dep_id), what="the rollout to finish")
        assert st["counts"] == {"updated": 12}
        assert [w["devices"] for w in st["waves"]] == [2, 4, 6]
        rows = client.call("devices")["devices"]
        assert {r["model_version"] for r in rows} == {"2.0"}
        history = client.call("device", {"id": "sim-00"})["history"]
        assert [h["action"] for h in history][:3] == ["deployed", "deploy_committed", "deploy_started"]
        assert f"{dep_id} deployed" in procs.cli("device", "sim-00").stdout
    with Requester(procs.url) as req:
        unsigned = req.call("sim-03", "ping")
        foreign = req.call("sim-03", "ping", key=keys.load_private(other_key))
        signed = req.call("sim-03", "ping", key=keys.load_private(hub_key))
    assert unsigned["error"]["code"] == foreign["error"]["code"] == "command.unauthorized"
    assert signed["ok"] is True


def test_injected_failures_halt_and_roll_back_the_wave(procs, tmp_path):
    procs.hub()
    procs.sim(20, "sim", "--fail-rate", "0.3")
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 20), what="20 devices online")
        dep_id = procs.cli("deploy", str(art), "--waves", "10,50,100", "--max-failures", "5%").stdout.strip()
        st = wait_for(lambda: finished(procs, dep_id, ("halted",)), what="the rollout to halt")
        wave = st["wave"]
        inside = [m for m in st["devices"] if m["wave"] == wave]
        later = [m for m in st["devices"] if m["wave"] > wave]
        assert st["rollback"] == "wave" and "failed" in st["reason"]
        assert {m["state"] for m in inside} <= {"failed", "rolled_back"} and "failed" in {m["state"] for m in inside}
        assert later and {m["state"] for m in later} == {"pending"}          # nobody outside was touched
        versions = {r["id"]: r["model_version"] for r in client.call("devices")["devices"]}
        assert all(versions[m["device"]] == "1.0" for m in inside + later)
        assert "halted" in procs.cli("status", dep_id).stdout


def test_hub_killed_mid_rollout_resumes_after_restart(procs, tmp_path):
    hub = procs.hub()
    procs.sim(16)
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 16), what="16 devices online")
    dep_id = procs.cli("deploy", str(art), "--waves", "10,50,100", "--concurrency", "2").stdout.strip()
    wait_for(lambda: status(procs, dep_id)["counts"].get("updated", 0) >= 2, what="a first wave")
    procs.kill(hub)
    assert status_from_db(tmp_path / "fleet.sqlite", dep_id) == "running"
    procs.hub()
    st = wait_for(lambda: finished(procs, dep_id), timeout=90, what="the resumed rollout to finish")
    assert st["counts"] == {"updated": 16}


def status_from_db(path, dep_id):
    from fleet.store import Store
    db = Store(path)
    try:
        return db.query("SELECT state FROM deployments WHERE id=?", (dep_id,))[0]["state"]
    finally:
        db.close()


def test_offline_device_gets_the_update_when_it_returns(procs, tmp_path):
    procs.hub()
    procs.sim(4, "sim")
    late = procs.sim(1, "late")               # its own connection: its Last Will marks it offline
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 5), what="5 devices online")
        procs.kill(late)
        wait_for(lambda: devices_seen(client, 1, prefix="late", online=False), what="late-0 offline")
        dep_id = procs.cli("deploy", str(art), "--waves", "50,100").stdout.strip()
        st = wait_for(lambda: finished(procs, dep_id), what="the rollout to finish without late-0")
        assert st["counts"] == {"updated": 4, "pending": 1}
        procs.sim(1, "late")
        wait_for(lambda: finished(procs, dep_id) and status(procs, dep_id)["counts"] == {"updated": 5},
                 what="late-0 updated after it returned")
        row = client.call("device", {"id": "late-0"})
        assert row["model_version"] == "2.0" and row["online"]


def test_pause_resume_and_abort_from_the_cli(procs, tmp_path):
    procs.hub()
    procs.sim(8)
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 8), what="8 devices online")
        dep_id = procs.cli("deploy", str(art), "--waves", "25,100", "--concurrency", "1").stdout.strip()
        # paused from this process's open connection, at once: a second CLI process would start
        # while the hub sends, and under load the first wave could be through before it is up
        assert client.call("pause", {"id": dep_id}) == {"id": dep_id, "state": "paused"}
    st = wait_for(lambda: finished(procs, dep_id, ("paused",)), what="in-flight steps to settle")
    touched = sum(n for s, n in st["counts"].items() if s != "pending")
    assert touched <= 2                                  # at most the sends already started
    assert procs.cli("pause", dep_id, check=False).returncode == 6          # fleet.state: not running
    procs.cli("resume", dep_id)
    wait_for(lambda: finished(procs, dep_id), what="the resumed rollout")
    assert procs.cli("abort", dep_id, check=False).returncode == 6          # done: nothing to abort


def test_shadow_canaries_that_disagree_halt_the_rollout_before_anything_switches(procs, tmp_path):
    procs.hub()
    procs.sim(10, "sim", "--fail-rate", "1", "--fail-mode", "disagree")
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 10), what="10 devices online")
        dep_id = procs.cli("deploy", str(art), "--waves", "30,100", "--shadow", "8").stdout.strip()
        st = wait_for(lambda: finished(procs, dep_id, ("halted",)), what="the canary wave to halt")
        canaries = [m for m in st["devices"] if m["wave"] == 0]
        assert st["wave"] == 0 and len(canaries) == 3
        assert all(m["shadow"]["top1_agreement"] < 0.99 and "agreement" in m["error"] for m in canaries
                   if m["state"] == "failed")
        assert {m["state"] for m in st["devices"] if m["wave"] == 1} == {"pending"}
        assert {r["model_version"] for r in client.call("devices")["devices"]} == {"1.0"}


def test_a_broker_outage_mid_transfer_fails_no_device(procs, tmp_path, mosquitto):
    procs.hub()
    procs.sim(8)
    art = make_artifact(tmp_path / "m2.gpk", "2.0", size=4 << 20)        # 64 chunks: transfers take a while
    with hub_client(procs.url) as client:
        wait_for(lambda: devices_seen(client, 8), what="8 devices online")
        dep_id = procs.cli("deploy", str(art), "--waves", "50,100", "--concurrency", "4").stdout.strip()
        wait_for(lambda: "sending" in client.call("status", {"id": dep_id})["counts"], interval=0.05,
                 what="transfers in flight")
    mosquitto.stop()                       # same port and persistence file when it comes back
    time.sleep(3)
    mosquitto.start()
    st = wait_for(lambda: finished(procs, dep_id), timeout=180, what="the rollout to finish after the outage")
    assert st["counts"] == {"updated": 8}, st
