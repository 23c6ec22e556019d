"""The rollout calculator: what a deployment should do next, as a pure function of data.

``decide(dep, members, devices, now, limits)`` reads the deployment row, its members (one per
target device: ``wave``, ``state``, ``sent_at``, ``baseline``) and the registry's device rows,
and returns actions for the actor (rollout.py) to carry out:

    ("verified", device)          the device runs the new model and is healthy
    ("failed", device, reason)    it is not (wrong version past the timeout, errors, latency): held back
    ("rollback", device)          put its previous model back (halted wave, or an operator rollback)
    ("send", device)              start the transfer (bounded by the deployment's concurrency)
    ("wave", n)                   promote: wave n is open
    ("state", state, reason)      running -> halted | done

A member's states: pending -> sending -> verifying -> updated | failed; rollback: updated |
verifying -> rolling_back -> rolled_back | rollback_failed; superseded (a newer deployment took
the device before this one reached it). Waves are cumulative percentages of the target set: with
``[1, 10, 100]`` over 1,000 devices wave 0 holds 10 devices, wave 1 the next 90, wave 2 the rest.

A wave is complete when none of its members is sending or verifying and every pending one is
offline (an offline device gets the update when it comes back, even after the deployment is done).
The deployment halts as soon as the failures among the open waves' members exceed
``max_failures`` (a fraction) of them, and only the current wave is rolled back.
A firmware deployment (``kind`` = firmware, a .fw bundle) is judged by the device's ``firmware``
events instead of its model hash: ``validated`` for the bundle's version after the send (then the
same health checks on metrics after it), ``reverted``/``refused`` = failed (the device already went
back to its old slot by itself: nothing to roll back). Its devices that validated the new slot
cannot be rolled back from the hub (FIRMWARE_NO_ROLLBACK): a rollback marks them
``rollback_failed`` with that reason and they keep the new firmware.
No I/O here: tests/fleet/test_plan.py drives it with dicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass



@dataclass(frozen=True)
class Limits:
    verify_timeout_s: float = 120.0   # from the commit to a healthy report of the new version
    error_rate_slack: float = 0.02    # new error rate may exceed the previous one by this much
    latency_ratio: float = 1.5        # new p95 may be this many times the previous one ...
    latency_slack_ms: float = 5.0     # ... plus this (small latencies jitter with the host's load)
    settle_s: float = 1.0             # metrics windows ending this soon after the commit still hold the reload
    shadow_agreement: float = 0.99    # top-1 agreement a shadow run must reach (--shadow)


FIRMWARE_NO_ROLLBACK = ("kept the new firmware: the hub cannot roll a validated slot back (devices have no "
                        "revert command and refuse a downgrade over MQTT); deploy a fixed, higher version")


def wave_sizes(n: int, waves: list[float]) -> list[int]:
    """Cumulative member counts per wave: ``[1, 10, 100]`` of 1,000 -> ``[10, 100, 1000]``; a
    non-empty wave holds at least one device, and the last always holds everyone."""
    sizes, previous = [], 0
    for pct in waves:
        size = min(n, max(previous, math.ceil(pct * n / 100.0), 1 if n else 0))
        sizes.append(size)
        previous = size
    if sizes:
        sizes[-1] = n
    return sizes


def wave_of(index: int, sizes: list[int]) -> int:
    return next(w for w, size in enumerate(sizes) if index < size)


def health_verdict(member: dict, device: dict | None, sha256: str, now: float, limits: Limits,
                   shadow: int = 0, firmware: str | None = None) -> tuple[str, str | None]:
    """("ok", None) | ("fail", reason) | ("wait", None) for a member that is verifying. A firmware
    deployment (``firmware`` = the bundle's version) waits for the slot's verdict instead of a model hash."""
    sent = member.get("sent_at") or now
    if shadow:              # the report came with the commit; a device that was not switched has one too
        verdict = _shadow_verdict(member.get("shadow"), limits)
        if verdict[0] != "ok":
            return verdict
    running, since = _runs(device, sha256, firmware, sent)
    if running == "reverted":
        return "fail", since
    if running and (device.get("metrics_at") or 0) > since + limits.settle_s:
        health, base = device.get("health") or {}, member.get("baseline") or {}
        allowed = (base.get("error_rate") or 0.0) + limits.error_rate_slack
        if (health.get("error_rate") or 0.0) > allowed:
            return "fail", f"error rate {health['error_rate']:.3f} above {allowed:.3f} (previous version + slack)"
        p95, old = health.get("p95_ms"), base.get("p95_ms")
        if p95 is not None and old is not None and p95 > old * limits.latency_ratio + limits.latency_slack_ms:
            return "fail", f"p95 latency {p95:.2f} ms above {old * limits.latency_ratio + limits.latency_slack_ms:.2f} ms"
        return "ok", None
    if now - sent > limits.verify_timeout_s:
        seen = (device or {}).get("firmware_version" if firmware else "model_sha256")
        return "fail", (f"no healthy report of {firmware or sha256[:12]} within {limits.verify_timeout_s:g}s "
                        f"(device runs {str(seen)[:12]})")
    return "wait", None


def _runs(device: dict | None, sha256: str, firmware: str | None, sent: float):
    """(True, since) when the device runs the new version (since when); (False, sent) not yet;
    ("reverted", reason) when its new firmware slot failed validation (the device went back by itself)."""
    if device is None:
        return False, sent
    if firmware is None:
        return device.get("model_sha256") == sha256, sent
    fw = device.get("firmware") or {}
    if fw.get("version") != firmware or (fw.get("at") or 0) <= sent:
        return False, sent
    if fw.get("phase") in ("reverted", "refused"):
        return "reverted", f"firmware {firmware} {fw['phase']} on the device: {fw.get('reason') or 'no reason given'}"
    return fw.get("phase") == "validated", fw["at"]


def _shadow_verdict(report: dict | None, limits: Limits) -> tuple[str, str | None]:
    if not report:
        return "fail", "the device sent no shadow report (does its daemon know deploy shadow?)"
    if report.get("error"):
        return "fail", f"shadow run failed: {report['error']}"
    agreement = report.get("top1_agreement")
    if agreement is None or agreement < limits.shadow_agreement:
        return "fail", f"shadow top-1 agreement {agreement} below {limits.shadow_agreement}"
    return "ok", None


def firmware_version(dep: dict) -> str | None:
    return dep["version"] if dep.get("kind") == "firmware" else None


def _runs_firmware_already(dep: dict, device: dict | None) -> bool:
    """A device that validated this firmware version already (a send resumed after a hub restart,
    or a device updated by other means) needs nothing: its OTA would refuse a reinstall."""
    version = firmware_version(dep)
    return bool(version and device and device.get("firmware_version") == version)


def canary_shadow(dep: dict, member: dict) -> int:
    """``--shadow N`` applies to the canaries: the members of the first wave."""
    return (dep.get("shadow") or 0) if member["wave"] == 0 else 0


def decide(dep: dict, members: list[dict], devices: dict[str, dict], now: float,
           limits: Limits = Limits()) -> list[tuple]:
    actions: list[tuple] = []
    state = {m["device"]: m["state"] for m in members}
    for m in members:
        if m["state"] == "pending" and _runs_firmware_already(dep, devices.get(m["device"])):
            actions.append(("verified", m["device"]))      # OTA would refuse a reinstall (a resumed send)
            state[m["device"]] = "updated"
        if m["state"] == "verifying":
            verdict, reason = health_verdict(m, devices.get(m["device"]), dep["sha256"], now, limits,
                                             canary_shadow(dep, m), firmware_version(dep))
            if verdict == "ok":
                actions.append(("verified", m["device"]))
                state[m["device"]] = "updated"
            elif verdict == "fail":
                actions.append(("failed", m["device"], reason))
                state[m["device"]] = "failed"
    if dep["rollback"] != "none":
        for m in members:
            in_scope = dep["rollback"] == "all" or m["wave"] == dep["wave"]
            if in_scope and state[m["device"]] in ("updated", "verifying") and firmware_version(dep):
                actions.append(("failed_rollback", m["device"], FIRMWARE_NO_ROLLBACK))
            elif in_scope and state[m["device"]] in ("updated", "verifying") and m.get("previous"):
                actions.append(("rollback", m["device"]))
            elif in_scope and state[m["device"]] in ("updated", "verifying"):
                actions.append(("failed_rollback", m["device"], "the device did not say what it ran before"))
        return actions
    if dep["state"] not in ("running", "done"):
        return actions
    open_members = [m for m in members if m["wave"] <= dep["wave"]]
    failed = sum(state[m["device"]] == "failed" for m in open_members)
    if dep["state"] == "running" and failed > dep["max_failures"] * len(open_members):
        actions.append(("state", "halted", f"{failed} of {len(open_members)} devices failed in waves "
                        f"0-{dep['wave']} (threshold {dep['max_failures']:.0%})"))
        return actions
    actions += _sends(dep, open_members, state, devices)
    if dep["state"] == "running" and _complete(open_members, state, devices):
        last = max(m["wave"] for m in members) if members else 0
        actions.append(("wave", dep["wave"] + 1) if dep["wave"] < last else ("state", "done", None))
    return actions


def _sends(dep: dict, open_members: list[dict], state: dict, devices: dict) -> list[tuple]:
    busy = sum(s == "sending" for s in state.values())
    slots = dep["concurrency"] - busy
    sends = []
    for m in open_members:
        if slots <= 0:
            break
        if state[m["device"]] == "pending" and (devices.get(m["device"]) or {}).get("online"):
            sends.append(("send", m["device"]))
            slots -= 1
    return sends


def _complete(open_members: list[dict], state: dict, devices: dict) -> bool:
    for m in open_members:
        s = state[m["device"]]
        if s in ("sending", "verifying", "rolling_back"):
            return False
        if s == "pending" and (devices.get(m["device"]) or {}).get("online"):
            return False
    return True
