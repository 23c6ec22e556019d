"""The hub's read API: what the CLI shows and the web dashboard (fleet/web) serves.

Every view is a plain function of the store and the registry returning JSON-ready dicts, so the
same data backs ``ganglion fleet status --json``, the hub's command topic and the dashboard's HTTP pages
and their JSON twins:

    overview(reg, store)               counts by online state and model version, deployments by state
    devices(reg, tag=, version=, online=, prefix=)   the device table, filtered
    device(reg, store, id)             one device: registry row, recent events, deployment history
    deployment(store, id)              state, reason, per-wave counts, per-device detail
    deployments(store)                 the list, newest first
    changes(store, since, limit)       the change stream after id ``since`` (a dashboard tails it
                                       and pushes each entry over server-sent events)
"""
from __future__ import annotations

from collections import Counter

from fleet import deployments as deps
from fleet.errors import FleetError
from fleet.registry import Registry
from fleet.store import Store

DEVICE_FIELDS = ("id", "online", "board", "model", "model_version", "model_sha256", "firmware_version", "last_seen",
                 "tags")


def overview(reg: Registry, store: Store) -> dict:
    rows = list(reg.devices.values())
    return {"devices": len(rows), "online": sum(r["online"] for r in rows),
            "offline": sum(not r["online"] for r in rows),
            "versions": dict(Counter(str(r.get("model_version")) for r in rows)),
            "deployments": {row["state"]: row["n"] for row in
                            store.query("SELECT state, COUNT(*) AS n FROM deployments GROUP BY state")}}


def devices(reg: Registry, *, tag: str | None = None, version: str | None = None, online: bool | None = None,
            prefix: str | None = None) -> list[dict]:
    key, _, value = (tag or "").partition("=")
    out = []
    for row in sorted(reg.devices.values(), key=lambda r: r["id"]):
        if (tag and row["tags"].get(key) != value) or (version and str(row.get("model_version")) != version) \
                or (online is not None and row["online"] != online) or (prefix and not row["id"].startswith(prefix)):
            continue
        out.append({**{k: row.get(k) for k in DEVICE_FIELDS}, "health": row.get("health") or {}})
    return out


def device(reg: Registry, store: Store, device_id: str) -> dict:
    row = reg.devices.get(device_id)
    if row is None:
        raise FleetError(f"no device {device_id!r} in the registry", where="fleet", code="fleet.unknown_device",
                         hint="a device appears once it publishes its status")
    return {**row, "events": list(reg.events.get(device_id, [])),
            "history": store.query("SELECT ts, deployment, action, detail FROM history WHERE device=? "
                                   "ORDER BY id DESC LIMIT 100", (device_id,))}


def deployment(store: Store, dep_id: str | None = None) -> dict:
    dep = deps.get(store, dep_id)
    members = store.query("SELECT device, wave, state, sent_at, done_at, error, previous, shadow "
                          "FROM deployment_devices WHERE deployment=? ORDER BY ord", (dep["id"],))
    waves = []
    for index, pct in enumerate(dep["waves"]):
        inside = [m for m in members if m["wave"] == index]
        waves.append({"wave": index, "percent": pct, "devices": len(inside),
                      "open": index <= dep["wave"], "states": dict(Counter(m["state"] for m in inside))})
    return {**{k: dep[k] for k in ("id", "state", "reason", "wave", "rollback", "created", "updated", "name",
                                   "version", "sha256", "kind", "target", "max_failures", "concurrency",
                                   "shadow")},
            "counts": dict(Counter(m["state"] for m in members)), "waves": waves, "devices": members}


def deployments(store: Store) -> list[dict]:
    return store.query("SELECT id, state, reason, wave, rollback, created, name, version, kind, target "
                       "FROM deployments ORDER BY created DESC")


def changes(store: Store, since: int = 0, limit: int = 500) -> list[dict]:
    return store.query("SELECT id, ts, kind, ref, data FROM changes WHERE id > ? ORDER BY id LIMIT ?",
                       (since, limit))
