"""The rollout calculator as data: waves, verdicts, halts, rollbacks, deferral of offline devices."""
import pytest

from fleet import plan

SHA = "a" * 64


def dep(**kw):
    return {"id": "d1", "state": "running", "wave": 0, "waves": [10, 50, 100], "max_failures": 0.05,
            "concurrency": 4, "rollback": "none", "sha256": SHA, "shadow": 0, **kw}


def members(n, sizes, **states):
    return [{"device": f"d{i}", "wave": plan.wave_of(i, sizes), "state": states.get(f"d{i}", "pending"),
             "sent_at": 100.0, "baseline": {"error_rate": 0.0, "p95_ms": 5.0}, "previous": "/old.gpk"}
            for i in range(n)]


def online(n, **rows):
    return {f"d{i}": {"online": True, **rows.get(f"d{i}", {})} for i in range(n)}


def running_new(p95=5.0, error_rate=0.0, metrics_at=200.0):
    return {"model_sha256": SHA, "metrics_at": metrics_at, "health": {"p95_ms": p95, "error_rate": error_rate}}


@pytest.mark.parametrize("n, waves, sizes", [
    (1000, [1, 10, 100], [10, 100, 1000]), (20, [10, 50, 100], [2, 10, 20]), (3, [1, 10, 100], [1, 1, 3]),
    (5, [50], [5]), (0, [10, 100], [0, 0]),
])
def test_wave_sizes_are_cumulative_and_cover_everyone(n, waves, sizes):
    assert plan.wave_sizes(n, waves) == sizes


def test_sends_only_open_wave_online_members_within_concurrency():
    sizes = plan.wave_sizes(20, [10, 50, 100])
    devs = online(20)
    devs["d1"]["online"] = False
    acts = plan.decide(dep(concurrency=1), members(20, sizes), devs, 150.0)
    assert acts == [("send", "d0")]


def test_wave_promotes_when_members_are_updated_or_offline():
    sizes = plan.wave_sizes(20, [10, 50, 100])
    devs = online(20, d0=running_new())
    devs["d1"]["online"] = False                       # deferred: gets it when it returns
    acts = plan.decide(dep(), members(20, sizes, d0="verifying"), devs, 250.0)
    assert acts == [("verified", "d0"), ("wave", 1)]


def test_last_wave_completes_the_deployment():
    sizes = plan.wave_sizes(2, [50, 100])
    acts = plan.decide(dep(wave=1), members(2, sizes, d0="updated", d1="updated"), online(2), 250.0)
    assert acts == [("state", "done", None)]


@pytest.mark.parametrize("row, reason", [
    (running_new(error_rate=0.5), "error rate"),
    (running_new(p95=50.0), "p95 latency"),
    ({"model_sha256": "b" * 64, "metrics_at": 200.0, "health": {}}, "no healthy report"),
])
def test_unhealthy_or_wrong_version_fails_and_halts(row, reason):
    sizes = plan.wave_sizes(20, [10, 50, 100])
    acts = plan.decide(dep(), members(20, sizes, d0="verifying"), online(20, d0=row), 100.0 + 121.0)
    assert acts[0][:2] == ("failed", "d0") and reason in acts[0][2]
    assert acts[1][:2] == ("state", "halted")


def test_waits_for_a_report_newer_than_the_commit():
    sizes = plan.wave_sizes(20, [10, 50, 100])
    acts = plan.decide(dep(), members(20, sizes, d0="verifying"), online(20, d0=running_new(metrics_at=90.0)), 150.0)
    assert ("verified", "d0") not in acts and not any(a[0] == "failed" for a in acts)


def test_halted_deployment_rolls_back_only_its_current_wave():
    sizes = plan.wave_sizes(20, [10, 50, 100])
    ms = members(20, sizes, d0="updated", d1="updated", d2="updated", d3="failed", d4="verifying")
    acts = plan.decide(dep(state="halted", wave=1, rollback="wave"), ms, online(20), 150.0)
    assert sorted(acts) == [("rollback", "d2"), ("rollback", "d4")]        # d0, d1 are wave 0


def test_operator_rollback_covers_every_wave_and_sends_nothing():
    sizes = plan.wave_sizes(20, [10, 50, 100])
    ms = members(20, sizes, d0="updated", d5="updated")
    acts = plan.decide(dep(state="aborted", wave=1, rollback="all"), ms, online(20), 150.0)
    assert sorted(acts) == [("rollback", "d0"), ("rollback", "d5")]


@pytest.mark.parametrize("state", ["paused", "aborted", "halted"])
def test_no_sends_unless_running_or_done(state):
    sizes = plan.wave_sizes(20, [10, 50, 100])
    assert plan.decide(dep(state=state), members(20, sizes), online(20), 150.0) == []


def test_done_deployment_still_serves_a_returning_device():
    sizes = plan.wave_sizes(3, [100])
    acts = plan.decide(dep(state="done"), members(3, sizes, d0="updated", d1="updated"), online(3), 150.0)
    assert acts == [("send", "d2")]


@pytest.mark.parametrize("report, verdict", [
    ({"top1_agreement": 1.0}, "ok"), ({"top1_agreement": 0.6}, "fail"), (None, "fail"),
    ({"error": "candidate did not load"}, "fail"),
])
def test_shadow_agreement_gates_the_verdict(report, verdict):
    member = {"sent_at": 100.0, "baseline": {}, "shadow": report}
    got, _ = plan.health_verdict(member, running_new(), SHA, 150.0, plan.Limits(), shadow=32)
    assert got == verdict


def fw_row(phase, version="2.0.0", at=150.0, metrics_at=152.0, error_rate=0.0):
    return {"firmware": {"phase": phase, "version": version, "at": at, "reason": "selftest failed"},
            "metrics_at": metrics_at, "health": {"p95_ms": 5.0, "error_rate": error_rate}, "model_sha256": "other"}


@pytest.mark.parametrize("row, now, verdict", [
    (fw_row("validated"), 160.0, "ok"),                          # validated after the send, healthy metrics after
    (fw_row("validated", metrics_at=150.5), 160.0, "wait"),      # no metrics window after the new slot yet
    (fw_row("validated", error_rate=0.5), 160.0, "fail"),        # the new slot serves errors
    (fw_row("installed"), 160.0, "wait"),                        # restarting into the slot
    (fw_row("reverted"), 160.0, "fail"),                         # the slot failed; the device went back itself
    (fw_row("validated", version="1.9.0"), 160.0, "wait"),       # another version's verdict
    (fw_row("validated", at=90.0), 160.0, "wait"),               # a verdict from before this send
    (fw_row("installed"), 500.0, "fail"),                        # never validated: timeout
])
def test_firmware_members_are_judged_by_their_slot_verdict(row, now, verdict):
    member = members(1, [1])[0]
    assert plan.health_verdict(member, row, SHA, now, plan.Limits(), firmware="2.0.0")[0] == verdict


def test_a_halted_firmware_wave_sends_nothing_back_and_says_why():
    sizes = plan.wave_sizes(4, [50, 100])
    ms = members(4, sizes, d0="updated", d1="failed")
    acts = plan.decide(dep(kind="firmware", version="2.0.0", state="halted", rollback="wave"), ms, online(4), 160.0)
    assert acts == [("failed_rollback", "d0", plan.FIRMWARE_NO_ROLLBACK)]


def test_a_device_already_on_the_firmware_version_is_not_sent_it_again():
    sizes = plan.wave_sizes(2, [100])
    devs = online(2, d0={"firmware_version": "2.0.0"}, d1={"firmware_version": "1.0.0"})
    acts = plan.decide(dep(kind="firmware", version="2.0.0"), members(2, sizes), devs, 150.0)
    assert ("verified", "d0") in acts and ("send", "d1") in acts and ("send", "d0") not in acts
