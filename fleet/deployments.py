"""Operator actions on deployments: create one from an uploaded artifact (.gpk) or firmware bundle
(.fw, fleet/bundles.py), pause, resume, abort, rollback.

Runs on the hub's loop thread (the database's one writer). Creating a deployment resolves the
target set once (``all`` = every device the registry knows at that moment, ``tag:K=V``, or ids),
orders it by a hash of the device id (a stable, spread-out canary set), assigns waves
(plan.wave_sizes) and writes everything in one transaction. Pending members of older deployments
that the new one also targets become ``superseded``: one device follows one deployment at a time.

State transitions an operator may ask for (anything else is ``fleet.state``):

    pause     running -> paused            sends stop; verdicts and rollbacks go on
    resume    paused -> running
    abort     running | paused -> aborted  nothing new is sent; devices keep what they have
    rollback  any -> aborted (done/halted stay)   every updated member gets its previous model back
"""
from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

from core import artifact as gpk
from core.errors import UsageError
from fleet import bundles, plan
from fleet.errors import DeploymentStateError, NoTargetsError, UnknownDeploymentError
from fleet.registry import Registry
from fleet.store import Store

TRANSITIONS = {"pause": ({"running"}, "paused"), "resume": ({"paused"}, "running"),
               "abort": ({"running", "paused"}, "aborted")}


def check_options(args: dict) -> dict:
    """The deploy options as the hub receives them; every problem in one UsageError."""
    problems = []
    to = args.get("to", "all")
    if not (to == "all" or (isinstance(to, str) and to.startswith("tag:") and "=" in to)
            or (isinstance(to, list) and to and all(isinstance(d, str) for d in to))):
        problems.append(f"'to' must be 'all', 'tag:K=V' or a list of device ids, got {to!r}")
    waves = args.get("waves", [100])
    if not (isinstance(waves, list) and waves and all(isinstance(w, (int, float)) and 0 < w <= 100 for w in waves)
            and waves == sorted(waves)):
        problems.append(f"'waves' must be increasing percentages in (0, 100], got {waves!r}")
    max_failures = args.get("max_failures", 0.05)
    if not isinstance(max_failures, (int, float)) or not 0 <= max_failures <= 1:
        problems.append(f"'max_failures' must be a fraction 0..1, got {max_failures!r}")
    concurrency = args.get("concurrency", 20)
    if not isinstance(concurrency, int) or concurrency < 1:
        problems.append(f"'concurrency' must be a positive integer, got {concurrency!r}")
    shadow = args.get("shadow", 0)
    if not isinstance(shadow, int) or shadow < 0:
        problems.append(f"'shadow' must be a non-negative integer, got {shadow!r}")
    if problems:
        raise UsageError("bad deployment options: " + "; ".join(problems), code="usage.deploy",
                         hint="ganglion fleet deploy --help")
    waves = list(waves) if waves[-1] == 100 else list(waves) + [100]
    return {"to": to, "waves": waves, "max_failures": float(max_failures), "concurrency": concurrency,
            "shadow": shadow}


def create(store: Store, registry: Registry, artifacts: Path, upload: Path, options: dict,
           trusted_keys: list | None = None, firmware_keys: list | None = None) -> dict:
    opts = check_options(options)
    what = bundles.read_upload(upload, options.get("name"), trusted_keys=trusted_keys, firmware_keys=firmware_keys)
    if what["kind"] == "firmware" and opts["shadow"]:
        raise UsageError("--shadow compares models; a firmware bundle has no shadow run", code="usage.deploy",
                         hint="drop --shadow for a .fw deployment")
    targets = registry.select(opts["to"])
    if not targets:
        raise NoTargetsError(f"--to {opts['to']} matches no device the hub knows", where="deploy",
                             hint="ganglion fleet devices lists them; devices appear once they publish status")
    data = upload.read_bytes()
    digest = gpk.sha256(data)
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"{digest}{what['suffix']}"
    if not path.exists():
        gpk.atomic_write(path, data)
    dep_id = time.strftime("d%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    order = sorted(targets, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    sizes = plan.wave_sizes(len(order), opts["waves"])
    now = time.time()
    with store.transaction():
        store.insert("deployments", {"id": dep_id, "created": now, "updated": now, "artifact": str(path),
                                     "sha256": digest, "name": what["name"], "version": what["version"],
                                     "kind": what["kind"], "target": opts["to"],
                                     "waves": opts["waves"], "max_failures": opts["max_failures"],
                                     "concurrency": opts["concurrency"], "shadow": opts["shadow"],
                                     "state": "running"})
        _supersede(store, dep_id, targets)
        for index, device in enumerate(order):
            store.insert("deployment_devices", {"deployment": dep_id, "device": device, "ord": index,
                                                "wave": plan.wave_of(index, sizes), "state": "pending"})
        store.change("deployment", dep_id, {"state": "running", "devices": len(order), "sizes": sizes})
    return {"id": dep_id, "devices": len(order), "waves": sizes, "sha256": digest, "kind": what["kind"]}


def _supersede(store: Store, dep_id: str, targets: list[str]) -> None:
    wanted = set(targets)
    for row in store.query("SELECT deployment, device FROM deployment_devices WHERE state='pending'"):
        if row["device"] in wanted:
            store.update("deployment_devices", row, {"state": "superseded", "error": f"superseded by {dep_id}"})


def get(store: Store, dep_id: str | None) -> dict:
    rows = store.query("SELECT * FROM deployments WHERE id=?", (dep_id,)) if dep_id else \
        store.query("SELECT * FROM deployments ORDER BY created DESC LIMIT 1")
    if not rows:
        raise UnknownDeploymentError(f"no deployment {dep_id!r}" if dep_id else "no deployment yet",
                                     where="fleet", hint="ganglion fleet status lists them")
    return rows[0]


def transition(store: Store, rollouts, verb: str, dep_id: str | None) -> dict:
    dep = get(store, dep_id)
    if verb == "rollback":
        state = "aborted" if dep["state"] in ("running", "paused") else dep["state"]
        rollouts.set_state(dep["id"], state, "rollback requested", rollback="all")
        return {"id": dep["id"], "state": state, "rollback": "all"}
    allowed, new = TRANSITIONS[verb]
    if dep["state"] not in allowed:
        raise DeploymentStateError(f"cannot {verb} deployment {dep['id']}: it is {dep['state']}",
                                   where=dep["id"], hint=f"{verb} applies to a deployment that is "
                                   f"{' or '.join(sorted(allowed))}")
    rollouts.set_state(dep["id"], new, f"{verb} requested")
    return {"id": dep["id"], "state": new}
