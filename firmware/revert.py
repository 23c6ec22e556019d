"""``firmware revert``: make the previous valid slot active again, atomically (one state rename).

Used three ways: by hand (``ganglion firmware revert``), by ``validate`` when a new slot's health
check fails, and by ``boot`` when an unvalidated slot has used up its boot counter. A slot left
because it failed is marked ``failed`` with its reason and failure class; what happens to its
version follows ``firmware/failures.py``: a permanent failure records it in ``failed_versions``
at once (``install`` refuses it unless forced, OTA always), a transient one counts a retry and
refuses the version only once its retries are used up -- so no OTA loop either way.
"""
from __future__ import annotations

from firmware import failures
from firmware.errors import SlotError
from firmware.rootboard import with_lock
from firmware.slots import Layout, now


@with_lock
def revert(root, reason: str = "manual revert", *, mark_failed: bool = False,
           failure_class: str = failures.PERMANENT, layout: Layout | None = None) -> dict:
    """Switch to the previous valid slot; returns {"from", "to", "version", "failed", "reason"}
    and, when the left slot failed, "failure": {"class", "blacklisted", "count", "max_retries"}."""
    backend = layout.backend()
    state = backend.load()
    old = state.active
    if old is None:
        raise SlotError("no firmware is installed here", where=str(layout.state_path()),
                        code="firmware.not_installed")
    old_slot = state.slots[old]
    # An unproven slot that is left behind is a failure whatever the reason.
    failed = mark_failed or old_slot.get("status") != "valid"
    prev = state.previous
    can_revert = prev is not None and state.slots[prev].get("status") == "valid" \
        and layout.slot_dir(prev).is_dir()
    failure = None
    if failed and old_slot.get("status") != "failed":     # count a failure once, not at every retry
        failure = failures.record(state, old_slot.get("version"), reason, failure_class)
        old_slot.update(status="failed", failed=now(), reason=reason, failure_class=failure_class)
    if not can_revert:
        state.note("revert_impossible", slot=old, reason=reason)
        backend.save(state)
        raise SlotError(f"no valid previous slot to revert to ({reason})", where=str(layout.state_path()),
                        code="firmware.no_previous",
                        hint="install a known-good bundle with 'ganglion firmware install --force'")
    state.active = prev
    state.previous = None if failed else old
    state.slots[prev]["boot_count"] = 0
    state.note("reverted", **{"from": old, "to": prev, "reason": reason, "failed": failed,
                              **({"failure_class": failure_class} if failed else {})})
    backend.save(state)
    out = {"from": old, "to": prev, "version": state.slots[prev].get("version"), "failed": failed,
           "reason": reason}
    return {**out, "failure": failure} if failure else out
