"""``firmware revert``: make the previous valid slot active again, atomically (one state rename).

Used three ways: by hand (``ganglion firmware revert``), by ``validate`` when a new slot's health
check fails, and by ``boot`` when an unvalidated slot has used up its boot counter. A slot left
because it failed is marked ``failed`` and its version recorded in ``failed_versions``, so the same
bundle is not installed again by an OTA loop (``install`` refuses it unless forced).
"""
from __future__ import annotations

from pathlib import Path

from firmware.errors import SlotError
from firmware.slots import Layout, with_lock, now


@with_lock
def revert(root, reason: str = "manual revert", *, mark_failed: bool = False,
           layout: Layout | None = None) -> dict:
    """Switch to the previous valid slot; returns {"from", "to", "version", "failed"}."""
    layout = layout or Layout(Path(root))
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
    if failed:
        old_slot["status"] = "failed"
        old_slot["failed"] = now()
        old_slot["reason"] = reason
        if old_slot.get("version"):
            state.failed_versions[old_slot["version"]] = {"reason": reason, "at": now()}
    if not can_revert:
        state.note("revert_impossible", slot=old, reason=reason)
        backend.save(state)
        raise SlotError(f"no valid previous slot to revert to ({reason})", where=str(layout.state_path()),
                        code="firmware.no_previous",
                        hint="install a known-good bundle with 'ganglion firmware install --force'")
    state.active = prev
    state.previous = None if failed else old
    state.slots[prev]["boot_count"] = 0
    state.note("reverted", **{"from": old, "to": prev, "reason": reason, "failed": failed})
    backend.save(state)
    return {"from": old, "to": prev, "version": state.slots[prev].get("version"), "failed": failed,
            "reason": reason}
