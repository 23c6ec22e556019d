"""``firmware status``: the slot state of a root, plus what is on disk, for humans and for telemetry.

Besides the state document (``slots.py``) it reports where the layout came from (``board``,
``board_record``), each slot's trial bound (``max_boots``) and, for a failed slot, why and how it
failed (``reason``, ``failure_class``: permanent or transient, ``firmware/failures.py``); versions
refused for good are in ``failed_versions``, versions that may still be retried in ``retries``.
"""
from __future__ import annotations

from firmware import rootboard
from firmware.slots import SLOTS, Layout, version_order


def status(root, *, layout: Layout | None = None) -> dict:
    """The state document with each slot's folder presence; ``installed`` is False on a fresh root."""
    layout = layout or rootboard.resolve(root)
    state = layout.backend().load()
    out = state.to_dict()
    out["installed"] = state.active is not None
    out["state_path"] = str(layout.state_path())
    record = rootboard.record_path(layout.root)
    out["board_record"] = str(record) if record.is_file() else None
    for name in SLOTS:
        slot = {**state.slots[name], "path": str(layout.slot_dir(name)), "present": layout.slot_dir(name).is_dir()}
        if slot.get("status") == "unvalidated":
            slot["max_boots"] = state.max_boots_of(name)
        out["slots"][name] = slot
    return out


def render(info: dict) -> str:
    """A few readable lines: which slot runs, what each slot holds, recent failures and retries."""
    if not info["installed"]:
        return f"no firmware installed ({info['state_path']})"
    lines = [f"board {info['board']}, active slot {info['active']}, previous {info['previous'] or '-'}"]
    for name in SLOTS:
        s = info["slots"][name]
        mark = "*" if name == info["active"] else " "
        extra = f" boots={s.get('boot_count', 0)}/{s.get('max_boots')}" if s.get("status") == "unvalidated" else ""
        cls = f"{s['failure_class']}: " if s.get("failure_class") else ""
        reason = f" ({cls}{s['reason']})" if s.get("reason") else ""
        lines.append(f" {mark} {name}: {s.get('status'):<11} {s.get('version') or '-':<10}{extra}{reason}")
    for version, why in sorted(info["failed_versions"].items(), key=version_order):
        cls = why.get("class", "permanent")
        lines.append(f"   refused version {version} ({cls}): {why.get('reason')}")
    for version, retry in sorted(info.get("retries", {}).items(), key=version_order):
        lines.append(f"   version {version} may be retried: {retry.get('count')} transient failure(s) of "
                     f"{info.get('max_retries')} allowed retries; last: {retry.get('reason')}")
    return "\n".join(lines)
