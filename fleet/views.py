"""The hub's read API: what the CLI shows and the web dashboard (fleet/web) serves.

Every view is a plain function of the store and the registry returning JSON-ready dicts, so the
same data backs ``ganglion fleet status --json``, the hub's command topic and the dashboard's HTTP pages
and their JSON twins:

    overview(reg, store)               counts by online state and model version, deployments by state
    devices(reg, tag=, version=, online=, prefix=)   the device table, filtered
    device_page(reg, query)            one page of it for the dashboard: {devices, total, offset, limit, next}
    device(reg, store, id)             one device: registry row, recent events, deployment history
    deployment(store, id)              state, reason, per-wave counts, per-device detail
    deployments(store)                 the list, newest first
    changes(store, since, limit)       the change stream after id ``since`` (a dashboard tails it
                                       and pushes each entry over server-sent events)
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

from core.errors import UsageError
from fleet import deployments as deps
from fleet.errors import FleetError
from fleet.registry import Registry
from fleet.store import Store

DEVICE_FIELDS = ("id", "online", "board", "model", "model_version", "model_sha256", "firmware_version", "last_seen",
                 "tags")
PAGE_DEFAULT, PAGE_MAX = 200, 1000        # rows a page of the device table: the dashboard's, at most
FILTER_MAX = 200                          # characters of a filter value (tag, version, prefix)
ONLINE = {"": None, "online": True, "offline": False}


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


def device_page(reg: Registry, query: Mapping[str, str]) -> dict:
    """One page of the filtered device table (``/api/devices``): ``limit`` rows (default
    PAGE_DEFAULT, at most PAGE_MAX) from ``offset`` in id order; ``next`` is the offset of the
    following page, or None. Every bad parameter is named in one UsageError (``usage.query``)."""
    problems = []

    def number(name: str, default: int, low: int, high: int) -> int:
        text = query.get(name) or str(default)
        if not text.isdigit() or not low <= int(text) <= high:
            problems.append(f"{name} must be an integer from {low} to {high}, not {text!r}")
            return default
        return int(text)
    limit, offset = number("limit", PAGE_DEFAULT, 1, PAGE_MAX), number("offset", 0, 0, 10**9)
    if query.get("online", "") not in ONLINE:
        problems.append(f"online must be online or offline, not {query['online']!r}")
    tag = query.get("tag") or None
    if tag is not None and "=" not in tag:
        problems.append(f"tag must be KEY=VALUE, not {tag!r}")
    problems += [f"{k} is longer than {FILTER_MAX} characters" for k in ("tag", "version", "prefix")
                 if len(query.get(k) or "") > FILTER_MAX]
    if problems:
        raise UsageError("bad device query: " + "; ".join(problems), where="/api/devices", code="usage.query",
                         hint=f"limit 1..{PAGE_MAX}, offset >= 0, tag=K=V, online=online|offline")
    rows = devices(reg, tag=tag, version=query.get("version") or None, online=ONLINE[query.get("online", "")],
                   prefix=query.get("prefix") or None)
    page = rows[offset:offset + limit]
    return {"devices": page, "total": len(rows), "offset": offset, "limit": limit,
            "next": offset + limit if offset + limit < len(rows) else None}


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
