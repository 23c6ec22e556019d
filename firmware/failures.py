"""Why a trial slot failed, and whether its version may be tried again.

A slot that does not become healthy is always reverted. What happens to its *version* depends on
what the failure says about the bundle:

    permanent   the bundle itself is bad: its files or signature do not match, a wheel is damaged,
                the self-test fails, the daemon cannot load its model. Trying the same bytes again
                gives the same answer, so the version goes to ``failed_versions`` at once and
                ``install`` / OTA refuse it (an OTA loop is impossible).
    transient   the verdict depends on the world around the bundle: the broker could not be reached
                or refused the connection (down, overloaded, credentials or CA changed on the
                broker's side), or the boot counter ran out without any verdict (power lost
                mid-boot, a watchdog reset). The version is not refused; its count in ``retries``
                goes up, and the failure after ``max_retries`` retries refuses it like a permanent
                one, so even a bundle that only ever fails "transiently" cannot loop forever.

``record(state, version, reason, cls)`` applies the rule to a ``SlotState`` and says what it did;
``cleared(state, version)`` forgets the count once the version validated.
"""
from __future__ import annotations

from firmware.slots import SlotState, now

PERMANENT = "permanent"
TRANSIENT = "transient"
CLASSES = (PERMANENT, TRANSIENT)

# The health check's checks (firmware/validate.py CHECKS) by what their failure says.
CHECK_CLASS = {"files": PERMANENT, "wheels": PERMANENT, "selftest": PERMANENT, "broker": TRANSIENT}


def record(state: SlotState, version: str | None, reason: str, cls: str) -> dict:
    """Note one failure of ``version``; returns {"class", "blacklisted", "count", "max_retries"}.

    ``count`` is how many transient failures the version has had (0 for a permanent one)."""
    if cls not in CLASSES:
        raise ValueError(f"unknown failure class {cls!r}")
    out = {"class": cls, "blacklisted": False, "count": 0, "max_retries": state.max_retries}
    if not version:
        return out
    if cls == PERMANENT:
        state.retries.pop(version, None)
        state.failed_versions[version] = {"reason": reason, "class": PERMANENT, "at": now()}
        return {**out, "blacklisted": True}
    count = int(state.retries.get(version, {}).get("count", 0)) + 1
    out["count"] = count
    if count > state.max_retries:
        state.retries.pop(version, None)
        state.failed_versions[version] = {
            "reason": f"{reason} (transient failure {count}: no retries left of {state.max_retries})",
            "class": TRANSIENT, "count": count, "at": now()}
        return {**out, "blacklisted": True}
    state.retries[version] = {"count": count, "reason": reason, "at": now()}
    return out


def cleared(state: SlotState, version: str | None) -> None:
    """A version that validated has proved itself: earlier transient failures no longer count."""
    if version:
        state.retries.pop(version, None)


def retries_left(state: SlotState, version: str) -> int | None:
    """How many more transient failures ``version`` may have before it is refused (None: refused)."""
    if version in state.failed_versions:
        return None
    return state.max_retries - int(state.retries.get(version, {}).get("count", 0))
