"""``firmware status``: the slot state of a root, plus what is on disk, for humans and for telemetry."""
from __future__ import annotations

from pathlib import Path

from firmware.slots import SLOTS, Layout


def status(root, *, layout: Layout | None = None) -> dict:
    """The state document with each slot's folder presence; ``installed`` is False on a fresh root."""
    layout = layout or Layout(Path(root))
    state = layout.backend().load()
    out = state.to_dict()
    out["installed"] = state.active is not None
    out["state_path"] = str(layout.state_path())
    for name in SLOTS:
        out["slots"][name] = {**state.slots[name], "path": str(layout.slot_dir(name)),
                              "present": layout.slot_dir(name).is_dir()}
    return out


def render(info: dict) -> str:
    """A few readable lines: which slot runs, what each slot holds, recent failures."""
    if not info["installed"]:
        return f"no firmware installed ({info['state_path']})"
    lines = [f"board {info['board']}, active slot {info['active']}, previous {info['previous'] or '-'}"]
    for name in SLOTS:
        s = info["slots"][name]
        mark = "*" if name == info["active"] else " "
        extra = f" boots={s.get('boot_count', 0)}" if s.get("status") == "unvalidated" else ""
        reason = f" ({s['reason']})" if s.get("reason") else ""
        lines.append(f" {mark} {name}: {s.get('status'):<11} {s.get('version') or '-':<10}{extra}{reason}")
    for version, why in sorted(info["failed_versions"].items()):
        lines.append(f"   failed version {version}: {why.get('reason')}")
    return "\n".join(lines)
