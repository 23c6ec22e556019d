"""Install -> boot -> validate -> revert on a folder standing in for the device disk.

Numbered like fwup's scenarios: each test is one story of a device's life, with real bundles,
real slot folders and the real self-test (in a child process where the story needs the slot's own
wheels, in-process where only the state machine is under test).
"""
from __future__ import annotations

import json

import pytest

from core.errors import FirmwareError
from firmware import selftest
from firmware.boot import boot
from firmware.errors import InstallError, SlotError
from firmware.install import install
from firmware.revert import revert
from firmware.status import render, status
from firmware.validate import validate


def in_process(slot, ctx):
    return selftest.run_slot(slot)


def test_01_first_install_boots_unvalidated_then_validates_in_a_child_process(root, make_bundle, fw_keys):
    result = install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert result == {"slot": "a", "version": "1.0.0", "previous": None, "status": "unvalidated",
                      "max_boots": 3, "board_record": str(root / "ganglion" / "board.json")}
    decision = boot(root)
    assert (decision["action"], decision["slot"], decision["boot_count"]) == ("trial", "a", 1)
    report = validate(root, trusted=[fw_keys["public"]])      # the real child-process self-test
    assert report["ok"], report
    assert set(report["checks"]) == {"files", "wheels", "selftest", "broker"}
    assert "self-test matches" in report["checks"]["selftest"]
    info = status(root)
    assert info["slots"]["a"]["status"] == "valid" and info["slots"]["a"]["boot_count"] == 0
    assert boot(root)["action"] == "boot"
    site = root / "ganglion/slots/a/site"
    assert (site / "ganglion_probe/__init__.py").read_text() == "VALUE = 42\n"


def test_02_second_install_goes_to_the_other_slot_and_revert_goes_back(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    result = install(make_bundle("1.1.0"), root, fw_keys["public"])
    assert (result["slot"], result["previous"]) == ("b", "a")
    assert validate(root, runner=in_process)["ok"]
    back = revert(root, "operator asked")
    assert (back["from"], back["to"], back["version"], back["failed"]) == ("b", "a", "1.0.0", False)
    assert status(root)["previous"] == "b"        # both valid: the manual revert can be undone
    again = revert(root)
    assert again["to"] == "b"


def test_03_self_test_failure_reverts_reports_and_is_not_retried(root, make_bundle, fw_keys,
                                                                  broken_runtime_wheelhouse):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert validate(root, runner=in_process)["ok"]
    bad = make_bundle("1.1.0", wheels=broken_runtime_wheelhouse)
    install(bad, root, fw_keys["public"])
    report = validate(root)                       # child process: the slot's broken runtime shadows LiteRT
    assert not report["ok"]
    assert report["failed_check"] == "selftest"
    assert "differs" in report["reason"]
    assert report["revert"]["to"] == "a" and report["revert"]["failed"] is True
    info = status(root)
    assert info["active"] == "a" and info["slots"]["b"]["status"] == "failed"
    assert "1.1.0" in info["failed_versions"]
    with pytest.raises(InstallError) as refused:
        install(bad, root, fw_keys["public"])
    assert refused.value.code == "firmware.failed_version"
    for _ in range(5):                            # no loop: every later start stays on the good slot
        decision = boot(root)
        assert (decision["slot"], decision["action"]) == ("a", "boot")
    assert "1.1.0" in render(status(root))


def test_04_a_slot_that_never_validates_is_reverted_after_max_boots(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    max_boots = status(root)["max_boots"]
    for n in range(1, max_boots + 1):
        decision = boot(root)
        assert (decision["slot"], decision["action"], decision["boot_count"]) == ("b", "trial", n)
    decision = boot(root)
    assert (decision["slot"], decision["action"]) == ("a", "reverted")
    assert "within" in decision["reverted"]["reason"]
    info = status(root)          # no verdict on the bundle: reverted, counted, not refused (yet)
    assert "1.1.0" not in info["failed_versions"] and info["retries"]["1.1.0"]["count"] == 1
    assert info["slots"]["b"]["failure_class"] == "transient"


def test_05_install_is_refused_while_the_running_slot_is_unvalidated(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    with pytest.raises(InstallError) as info:
        install(make_bundle("1.2.0"), root, fw_keys["public"])
    assert info.value.code == "firmware.pending"
    assert status(root)["slots"]["a"]["status"] == "valid"   # the known-good slot survived


def test_06_same_version_needs_force(root, make_bundle, fw_keys):
    bundle = make_bundle("1.0.0")
    install(bundle, root, fw_keys["public"])
    validate(root, runner=in_process)
    with pytest.raises(InstallError) as info:
        install(bundle, root, fw_keys["public"])
    assert info.value.code == "firmware.same_version"
    assert install(bundle, root, fw_keys["public"], force=True)["slot"] == "b"


def test_07_first_install_that_fails_has_nowhere_to_go_and_says_so(root, make_bundle, fw_keys,
                                                                  broken_runtime_wheelhouse):
    install(make_bundle("1.0.0", wheels=broken_runtime_wheelhouse), root, fw_keys["public"])
    report = validate(root)
    assert not report["ok"] and report["revert"]["error"]["code"] == "firmware.no_previous"
    with pytest.raises(SlotError) as info:
        boot(root)
    assert info.value.code == "firmware.no_previous"


def test_08_a_damaged_slot_file_fails_the_health_check(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    probe = root / "ganglion/slots/b/site/probe_extra/m3.py"
    probe.write_text("X = 'tampered'\n")
    report = validate(root, runner=in_process)
    assert report["failed_check"] == "wheels" and "m3.py: altered" in report["reason"]
    assert status(root)["active"] == "a"


def test_09_a_missing_active_slot_folder_reverts_at_boot(root, make_bundle, fw_keys):
    import shutil
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    shutil.rmtree(root / "ganglion/slots/b")
    decision = boot(root)
    assert (decision["slot"], decision["action"]) == ("a", "reverted")


def test_10_status_on_a_fresh_root_and_errors_without_firmware(root):
    assert status(root)["installed"] is False
    assert "no firmware installed" in render(status(root))
    for verb in (boot, validate, revert):
        with pytest.raises(SlotError) as info:
            verb(root)
        assert info.value.code == "firmware.not_installed"


def test_11_a_corrupt_state_file_is_reported_not_guessed(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    (root / "ganglion/state.json").write_text('{"active": "a", "slots": ')
    with pytest.raises(FirmwareError) as info:
        boot(root)
    assert info.value.code == "firmware.state"


def test_12_state_history_records_every_transition(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    boot(root)
    validate(root, runner=in_process)
    events = [h["event"] for h in json.loads((root / "ganglion/state.json").read_text())["history"]]
    assert events == ["installed", "trial_boot", "validated"]


@pytest.mark.mqtt
def test_13_validate_can_require_the_broker(root, make_bundle, fw_keys, mosquitto):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    report = validate(root, runner=in_process, broker=f"{mosquitto.host}:{mosquitto.port}")
    assert report["ok"] and report["checks"]["broker"] == "broker answered CONNACK"
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    from tests.fixtures.broker import free_port
    report = validate(root, runner=in_process, broker=f"127.0.0.1:{free_port()}")
    assert not report["ok"] and report["failed_check"] == "broker"
    assert report["revert"]["to"] == "a"


def test_14_the_self_test_module_runs_standalone_and_exits_non_zero_on_failure(root, make_bundle, fw_keys):
    import subprocess
    import sys
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    slot = root / "ganglion/slots/a"
    ok = subprocess.run([sys.executable, "-m", "firmware.selftest", "--slot", str(slot)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    expected = slot / "selftest/expected.npz"
    import numpy as np
    with np.load(expected, allow_pickle=False) as npz:
        arrays = {k: npz[k] + 1.0 for k in npz.files}
    np.savez(expected, **arrays)
    bad = subprocess.run([sys.executable, "-m", "firmware.selftest", "--slot", str(slot)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "differs" in json.loads(bad.stdout)["reason"]


def test_15_a_broker_without_a_port_means_1883(monkeypatch):
    from firmware import broker_probe as validate_mod
    from firmware.errors import HealthCheckError
    dialed = []

    def fake_connect(address, timeout):          # records where it would dial; refuses like a closed port
        dialed.append(address)
        raise ConnectionRefusedError("refused")
    monkeypatch.setattr(validate_mod.socket, "create_connection", fake_connect)
    for broker, address in [("10.0.0.5", ("10.0.0.5", 1883)), ("10.0.0.5:1884", ("10.0.0.5", 1884))]:
        with pytest.raises(HealthCheckError):
            validate_mod.check_broker(None, {"broker": broker})
        assert dialed[-1] == address


def test_16_one_operation_per_root_and_a_killed_holder_leaves_no_stale_lock(root, make_bundle, fw_keys):
    import signal
    import subprocess
    import sys
    bundle = make_bundle("1.0.0")
    lock = root / "ganglion" / ".lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for verb in (lambda: install(bundle, root, fw_keys["public"]), lambda: boot(root),
                     lambda: revert(root)):
            with pytest.raises(SlotError) as info:
                verb()
            assert info.value.code == "firmware.busy"
        assert not (root / "ganglion/slots/a").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert install(bundle, root, fw_keys["public"])["slot"] == "a"    # the kernel dropped the lock


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_08b_a_damaged_artifact_or_config_file_fails_the_files_check(root, make_bundle, fw_keys, damage):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    validate(root, runner=in_process)
    install(make_bundle("1.1.0"), root, fw_keys["public"])
    slot = root / "ganglion/slots/b"
    members = json.loads((slot / "manifest.json").read_bytes())["members"]
    name = next(n for n in sorted(members) if n.startswith("artifact/"))
    data = (slot / name).read_bytes()
    (slot / name).write_bytes(data[:1] + bytes([data[1] ^ 1]) + data[2:] if damage == "flipped byte" else data[:-1])
    report = validate(root, runner=in_process)
    assert not report["ok"] and report["failed_check"] == "files"
    assert f"slot file {name} does not match the manifest" in report["reason"]
    assert status(root)["active"] == "a"
