"""``firmware boot``: the start-up decision, run by the daemon (or a systemd unit) before anything else.

    active slot valid                       -> boot it
    active slot unvalidated                 -> count this boot; past the trial's ``max_boots`` revert,
                                               else boot it on trial (``validate`` must pass now)
    active slot folder missing or failed    -> revert to the previous valid slot
The counter is stored before the slot is used, so a slot that crashes the device before it can
validate still uses up its tries: after ``max_boots`` starts the next one reverts (Nerves' and
RAUC's boot-counting idea, done in the application because Ganglion has no bootloader of its own).
``max_boots`` is the trial's own (``install --max-boots``, the board's ``[slots] max_boots``),
else the root's default of 3. Running out of boots gives no verdict on the bundle (power may have
been lost mid-boot), so it is a *transient* failure: the version may be retried a bounded number
of times (``firmware/failures.py``); a missing slot folder is permanent.
"""
from __future__ import annotations

from firmware import failures
from firmware.errors import SlotError
from firmware.revert import revert
from firmware.rootboard import with_lock
from firmware.slots import Layout


@with_lock
def boot(root, *, layout: Layout | None = None) -> dict:
    """Decide which slot runs now; returns {"slot", "path", "version", "action", ...}."""
    backend = layout.backend()
    state = backend.load()
    if state.active is None:
        raise SlotError("no firmware is installed here", where=str(layout.state_path()),
                        code="firmware.not_installed", hint="run 'ganglion firmware install' first")
    slot = state.slots[state.active]
    reverted = None
    if not layout.slot_dir(state.active).is_dir() or slot.get("status") == "failed":
        reverted = revert(root, "active slot is missing or failed", mark_failed=True, layout=layout)
    elif slot.get("status") == "unvalidated":
        slot["boot_count"] = int(slot.get("boot_count", 0)) + 1
        bound = state.max_boots_of(state.active)
        if slot["boot_count"] > bound:
            backend.save(state)
            reverted = revert(root, f"not validated within {bound} boots", mark_failed=True,
                              failure_class=failures.TRANSIENT, layout=layout)
        else:
            state.note("trial_boot", slot=state.active, boot_count=slot["boot_count"])
            backend.save(state)
            return {**_decision(layout, state.active, slot, "trial"), "max_boots": bound}
    state = backend.load()
    return _decision(layout, state.active, state.slots[state.active], "reverted" if reverted else "boot",
                     reverted)


def _decision(layout: Layout, name: str, slot: dict, action: str, reverted=None) -> dict:
    out = {"slot": name, "path": str(layout.slot_dir(name)), "version": slot.get("version"),
           "status": slot.get("status"), "boot_count": slot.get("boot_count", 0), "action": action,
           "site": str(layout.slot_dir(name) / "site")}
    if reverted:
        out["reverted"] = reverted
    return out
