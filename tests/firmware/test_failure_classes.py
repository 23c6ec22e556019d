"""Permanent and transient health-check failures (``firmware/failures.py``), with real bundles
installed into a folder standing in for the device disk.

A bad bundle (self-test fails) is refused for good at once. A failure that says nothing about the
bundle (broker down during the trial, boot counter used up) reverts too but only counts a retry;
the failure after ``max_retries`` (3) retries refuses the version as well, so an OTA loop stays
impossible either way. ``firmware status`` shows the reason and the class (text and --json)."""
from __future__ import annotations

import json

import pytest

from edge.cli import main
from firmware import failures, selftest
from firmware.boot import boot
from firmware.errors import InstallError, SlotError
from firmware.install import install
from firmware.ota import deploy_firmware
from firmware.slots import MemoryStateBackend, SlotState
from firmware.status import render, status
from firmware.validate import validate
from tests.fixtures.broker import free_port


def in_process(slot, ctx):
    return selftest.run_slot(slot)


def closed_broker() -> str:
    return f"mqtt://127.0.0.1:{free_port()}"       # nothing listens there: the broker is "down"


@pytest.fixture
def running(root, make_bundle, fw_keys):
    """A root whose slot a holds a validated 1.0.0, and a factory for the next bundles."""
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert validate(root, runner=in_process)["ok"]
    return root


def fail_transiently(root, bundle, key) -> dict:
    install(bundle, root, key)
    report = validate(root, runner=in_process, broker=closed_broker())
    assert not report["ok"] and report["failed_check"] == "broker", report
    return report


# --- the rule itself, on the state document (no disk) -------------------------------------------

def test_record_applies_the_rule_to_the_state():
    state = SlotState()
    out = failures.record(state, "2.0.0", "selftest: differs", failures.PERMANENT)
    assert out["blacklisted"] and state.failed_versions["2.0.0"]["class"] == "permanent"
    for n in (1, 2, 3):
        out = failures.record(state, "2.1.0", "broker: down", failures.TRANSIENT)
        assert (out["blacklisted"], out["count"]) == (False, n)
        assert failures.retries_left(state, "2.1.0") == 3 - n
    out = failures.record(state, "2.1.0", "broker: down", failures.TRANSIENT)
    assert out["blacklisted"] and out["count"] == 4 and "2.1.0" not in state.retries
    assert state.failed_versions["2.1.0"]["class"] == "transient"
    assert failures.retries_left(state, "2.1.0") is None
    with pytest.raises(ValueError):
        failures.record(state, "2.2.0", "?", "sometimes")


def test_retries_round_trip_through_the_state_file_format():
    backend = MemoryStateBackend()
    state = SlotState(max_retries=2)
    failures.record(state, "1.2.0", "broker: down", failures.TRANSIENT)
    backend.save(state)
    again = backend.load()
    assert again.retries["1.2.0"]["count"] == 1 and again.max_retries == 2
    failures.cleared(again, "1.2.0")
    assert again.retries == {}


# --- permanent -----------------------------------------------------------------------------------

def test_a_self_test_failure_is_permanent_and_refused_at_once(running, make_bundle, fw_keys,
                                                              broken_runtime_wheelhouse):
    install(make_bundle("1.1.0", wheels=broken_runtime_wheelhouse), running, fw_keys["public"])
    report = validate(running)                     # child process: the slot's broken runtime
    assert report["failure_class"] == "permanent" and report["revert"]["failure"]["blacklisted"]
    info = status(running)
    assert info["failed_versions"]["1.1.0"]["class"] == "permanent" and info["retries"] == {}
    assert info["slots"]["b"]["failure_class"] == "permanent"
    with pytest.raises(InstallError) as err:
        install(make_bundle("1.1.0", wheels=broken_runtime_wheelhouse), running, fw_keys["public"])
    assert err.value.code == "firmware.failed_version"


# --- transient -----------------------------------------------------------------------------------

@pytest.mark.mqtt
def test_a_broker_outage_reverts_without_refusing_and_a_retry_can_succeed(running, make_bundle, fw_keys,
                                                                          mosquitto):
    bundle = make_bundle("1.1.0")
    report = fail_transiently(running, bundle, fw_keys["public"])
    assert report["failure_class"] == "transient" and "not reachable" in report["reason"]
    assert report["revert"]["to"] == "a" and not report["revert"]["failure"]["blacklisted"]
    info = status(running)
    assert info["active"] == "a" and info["slots"]["b"]["status"] == "failed"
    assert "1.1.0" not in info["failed_versions"] and info["retries"]["1.1.0"]["count"] == 1
    install(bundle, running, fw_keys["public"])    # no --force needed: the bundle was not judged bad
    assert validate(running, runner=in_process, broker=mosquitto.url)["ok"]
    info = status(running)
    assert info["active"] == "b" and info["retries"] == {}     # it proved itself: the count is gone


def test_the_retry_bound_refuses_a_version_that_keeps_failing_transiently(running, make_bundle, fw_keys):
    bundle = make_bundle("1.1.0")
    for attempt in (1, 2, 3):
        report = fail_transiently(running, bundle, fw_keys["public"])
        assert not report["revert"]["failure"]["blacklisted"]
        assert status(running)["retries"]["1.1.0"]["count"] == attempt
    report = fail_transiently(running, bundle, fw_keys["public"])   # the third retry fails too
    assert report["revert"]["failure"]["blacklisted"] and report["revert"]["failure"]["count"] == 4
    info = status(running)
    assert info["failed_versions"]["1.1.0"]["class"] == "transient" and "1.1.0" not in info["retries"]
    assert "no retries left of 3" in info["failed_versions"]["1.1.0"]["reason"]
    with pytest.raises(InstallError) as err:
        install(bundle, running, fw_keys["public"])
    assert err.value.code == "firmware.failed_version"
    events = []
    with pytest.raises(InstallError):              # OTA refuses it as well
        deploy_firmware(bundle, running, fw_keys["public"], events.append, validate_now=False)
    assert events[-1]["phase"] == "refused"


def test_a_used_up_boot_counter_is_transient_and_counts_toward_the_same_bound(running, make_bundle, fw_keys):
    bundle = make_bundle("1.1.0")
    for attempt in (1, 2, 3, 4):
        install(bundle, running, fw_keys["public"], max_boots=1)
        assert boot(running)["action"] == "trial"          # the one trial start: power lost mid-boot
        decision = boot(running)
        assert decision["action"] == "reverted" and decision["slot"] == "a"
        failure = decision["reverted"]["failure"]
        assert failure["class"] == "transient" and failure["count"] == attempt
        assert failure["blacklisted"] is (attempt == 4)
    assert status(running)["failed_versions"]["1.1.0"]["class"] == "transient"


def test_a_failure_is_counted_once_even_when_no_slot_can_take_over(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])   # the first install: nothing to go back to
    report = validate(root, runner=in_process, broker=closed_broker())
    assert report["revert"]["error"]["code"] == "firmware.no_previous"
    for _ in range(3):                                     # every start tries to leave the failed slot
        with pytest.raises(SlotError):
            boot(root)
    info = status(root)
    assert info["retries"]["1.0.0"]["count"] == 1 and info["slots"]["a"]["status"] == "failed"
    # the same version may be tried again without --force: nothing valid runs that it would replace
    assert install(make_bundle("1.0.0"), root, fw_keys["public"])["slot"] == "b"
    assert validate(root, runner=in_process)["ok"] and status(root)["retries"] == {}


# --- what status shows ---------------------------------------------------------------------------

def test_status_shows_reason_and_class_as_text_and_json(running, make_bundle, fw_keys, capsys,
                                                        broken_runtime_wheelhouse):
    fail_transiently(running, make_bundle("1.1.0"), fw_keys["public"])
    install(make_bundle("1.2.0", wheels=broken_runtime_wheelhouse), running, fw_keys["public"])
    assert not validate(running)["ok"]
    assert main(["firmware", "status", "--root", str(running), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["slots"]["b"]["failure_class"] == "permanent" and "selftest" in info["slots"]["b"]["reason"]
    assert info["retries"]["1.1.0"]["count"] == 1 and "broker" in info["retries"]["1.1.0"]["reason"]
    assert info["failed_versions"]["1.2.0"]["class"] == "permanent" and info["max_retries"] == 3
    assert main(["firmware", "status", "--root", str(running)]) == 0
    text = capsys.readouterr().out
    assert "b: failed      1.2.0      (permanent: selftest: self-test failed" in text
    assert "refused version 1.2.0 (permanent)" in text
    assert "version 1.1.0 may be retried: 1 transient failure(s) of 3 allowed retries; last: broker:" in text
    assert text.strip() == render(status(running))
