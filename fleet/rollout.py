"""The rollout actor: carries out what plan.decide says, and records every step before acting.

Runs on the hub's loop thread (the one database writer). Transfers and reloads are slow, so they
run on a thread pool; their outcome comes back through ``post`` (the loop's queue) and is applied
by ``on_result`` on the loop thread. A member's state is committed *before* its command goes out:
after a SIGKILL the hub finds ``sending`` members and sends again (the transfer resumes from the
chunks the device has; ``deploy.commit`` on a device that already runs the artifact reloads it,
harmless), ``rolling_back`` ones are rolled back again, ``verifying`` ones are judged from the
registry as if nothing happened.

Device commands: ``deploy.begin/.chunk/.commit`` (edge/telemetry/transfer.py) carry the artifact,
``deploy-firmware.*`` a firmware bundle (firmware/ota.py: the daemon installs it into the other
slot, replies ``{"outcome": "installed", "restart": true}``, restarts and validates the slot --
plan.py judges the ``firmware`` events that follow);
``reload {"model": previous}`` rolls back (the path the device's deploy reply named as
``previous``); every command is signed with the hub's key when it has one. An error the device
sent (model did not load, bad signature, ...) fails the member at once; no answer at all
(``telemetry.*``: a broker outage, a slow link) puts it back to ``pending``, at most
``MAX_ATTEMPTS`` times, or until it comes back if it went offline.
"""
from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from core.errors import GanglionError
from edge.telemetry.requester import Requester, check_reply
from fleet import plan
from fleet.registry import Registry
from fleet.store import Store
from firmware.ota import VERB as FIRMWARE_VERB       # the daemon's OTA transfer, deploy-firmware.*

log = logging.getLogger("ganglion.fleet.rollout")
MAX_ATTEMPTS = 3       # transfers that got no answer from an online device, before it is held back
RESUME = {"sending": "pending", "rolling_back": "updated"}    # what a restart makes of in-flight steps
# Deployments with something left to do: running or paused ones, and finished ones with a step in
# flight, a returning device to serve (done) or a rollback to carry out. Old ones cost nothing.
WORK_SQL = """
SELECT * FROM deployments d WHERE d.state IN ('running', 'paused') OR EXISTS (
    SELECT 1 FROM deployment_devices m WHERE m.deployment = d.id AND (
        m.state IN ('sending', 'verifying', 'rolling_back')
        OR (d.state = 'done' AND m.state = 'pending')
        OR (d.rollback != 'none' AND m.state = 'updated' AND (d.rollback = 'all' OR m.wave = d.wave))))
"""


class Rollouts:
    def __init__(self, store: Store, registry: Registry, requester: Requester, post: Callable[[tuple], None],
                 *, key=None, limits: plan.Limits = plan.Limits(), workers: int = 32, chunk_size: int = 64 * 1024):
        self.store, self.registry, self.requester, self.post = store, registry, requester, post
        self.key, self.limits, self.chunk_size = key, limits, chunk_size
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-send")
        self.resume()

    def resume(self) -> None:
        """After a restart (even SIGKILL): in-flight steps are retried from the database."""
        for old, new in RESUME.items():
            rows = self.store.query("SELECT deployment, device FROM deployment_devices WHERE state=?", (old,))
            for row in rows:
                self.store.update("deployment_devices", row, {"state": new})
            if rows:
                log.info("resumed %d member(s) that were %s", len(rows), old)

    # -- the loop's tick ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for dep in self.store.query(WORK_SQL):
            members = self.store.query("SELECT * FROM deployment_devices WHERE deployment=? ORDER BY ord",
                                       (dep["id"],))
            for action in plan.decide(dep, members, self.registry.devices, now, self.limits):
                self.apply(dep, {m["device"]: m for m in members}, action, now)

    def apply(self, dep: dict, members: dict, action: tuple, now: float) -> None:
        kind, arg = action[0], action[1]
        if kind == "send":
            self._send(dep, members[arg], now)
        elif kind == "verified":
            self._member(dep, arg, "updated", "deployed", done_at=now)
        elif kind in ("failed", "failed_rollback"):
            self._member(dep, arg, "failed" if kind == "failed" else "rollback_failed", "failed",
                         error=action[2], done_at=now)
        elif kind == "rollback":
            self._rollback(dep, members[arg])
        elif kind == "wave":
            self.store.update("deployments", {"id": dep["id"]}, {"wave": arg, "updated": now})
            self.store.change("deployment", dep["id"], {"wave": arg})
        elif kind == "state":
            self.set_state(dep["id"], arg, action[2], rollback="wave" if arg == "halted" else None)

    def set_state(self, dep_id: str, state: str, reason: str | None, *, rollback: str | None = None) -> None:
        values = {"state": state, "reason": reason, "updated": time.time()}
        if rollback:
            values["rollback"] = rollback
        self.store.update("deployments", {"id": dep_id}, values)
        self.store.change("deployment", dep_id, {"state": state, "reason": reason, "rollback": rollback})
        log.info("deployment %s: %s%s", dep_id, state, f" ({reason})" if reason else "")

    def _member(self, dep: dict, device: str, state: str, action: str, **values) -> None:
        with self.store.transaction():
            self.store.update("deployment_devices", {"deployment": dep["id"], "device": device},
                              {"state": state, **values})
            self.store.insert("history", {"ts": time.time(), "device": device, "deployment": dep["id"],
                                          "action": action, "detail": {"state": state, "sha256": dep["sha256"],
                                                                       "version": dep["version"],
                                                                       "error": values.get("error")}})
            self.store.change("member", dep["id"], {"device": device, "state": state, "error": values.get("error")})

    # -- commands to devices ---------------------------------------------------------------------
    def _send(self, dep: dict, member: dict, now: float) -> None:
        baseline = dict(self.registry.devices.get(member["device"], {}).get("health") or {})
        self._member(dep, member["device"], "sending", "deploy_started", sent_at=now, baseline=baseline)
        self.pool.submit(self._transfer, dep, member["device"], self._commit_args(dep, member))

    def _transfer(self, dep: dict, device: str, args: dict) -> None:
        try:
            verb = FIRMWARE_VERB if plan.firmware_version(dep) else "deploy"
            reply = self.requester.send_file(device, verb, dep["artifact"], key=self.key,
                                             chunk_size=self.chunk_size, timeout=30.0,
                                             meta={"deployment": dep["id"]}, args=args)
            check_reply(reply)
            self.post(("sent", dep["id"], device, reply["result"], None))
        except GanglionError as exc:
            self.post(("sent", dep["id"], device, None, exc))
        except Exception as exc:       # a bug must not leave the member 'sending' forever
            log.exception("transfer to %s failed", device)
            self.post(("sent", dep["id"], device, None, exc))

    def _commit_args(self, dep: dict, member: dict) -> dict:
        args = {"deployment": dep["id"]}
        if plan.canary_shadow(dep, member):     # the device runs the candidate beside the current model first
            args.update(shadow=dep["shadow"], min_agreement=self.limits.shadow_agreement)
        return args

    def _rollback(self, dep: dict, member: dict) -> None:
        self._member(dep, member["device"], "rolling_back", "rollback_started")
        self.pool.submit(self._reload, dep, member["device"], member["previous"])

    def _reload(self, dep: dict, device: str, previous: str) -> None:
        try:
            cid = hashlib.sha256(f"{dep['id']}/{device}/rollback".encode()).hexdigest()[:32]
            reply = self.requester.call(device, "reload", {"model": previous}, key=self.key, timeout=30.0,
                                        command_id=cid, retries=2)
            check_reply(reply)
            self.post(("rolled_back", dep["id"], device, reply["result"], None))
        except Exception as exc:       # any failure is the member's verdict, never the hub's crash
            self.post(("rolled_back", dep["id"], device, None, exc))

    # -- outcomes (loop thread) ----------------------------------------------------------------
    def on_result(self, kind: str, dep_id: str, device: str, result: dict | None, error) -> None:
        dep = {"id": dep_id, **self.store.query("SELECT sha256, version FROM deployments WHERE id=?", (dep_id,))[0]}
        message = getattr(error, "message", None) or (str(error) if error else None)
        if kind == "rolled_back":
            self._member(dep, device, "rollback_failed" if error else "rolled_back", "rolled_back",
                         error=message, done_at=time.time())
        elif error is None and result.get("outcome") in ("reverted", "refused"):    # firmware validated at once
            self._member(dep, device, "failed", "failed", error=f"firmware {result.get('outcome')}: "
                         f"{result.get('reason') or result.get('failed_check')}", done_at=time.time())
        elif error is None:
            self._member(dep, device, "verifying", "deploy_committed", sent_at=time.time(),
                         previous=result.get("previous"), shadow=result.get("shadow"))
        elif not _transient_code(str(getattr(error, "code", ""))):     # the device refused or failed it
            self._member(dep, device, "failed", "failed", error=message, done_at=time.time())
        elif not self._online(device):         # went away mid-transfer: it gets it when it returns
            self._member(dep, device, "pending", "deploy_deferred", error=f"offline: {message}")
        else:
            self._transient(dep, device, message)

    def _transient(self, dep: dict, device: str, message: str) -> None:
        """No answer from an online device (a broker outage, a slow link): try again, a few times."""
        row = self.store.query("SELECT attempts FROM deployment_devices WHERE deployment=? AND device=?",
                               (dep["id"], device))[0]
        attempts = (row["attempts"] or 0) + 1
        if attempts >= MAX_ATTEMPTS:
            self._member(dep, device, "failed", "failed", error=f"{attempts} attempts: {message}",
                         done_at=time.time(), attempts=attempts)
        else:
            self._member(dep, device, "pending", "deploy_retry", error=message, attempts=attempts)

    def _online(self, device: str) -> bool:
        return bool(self.registry.devices.get(device, {}).get("online"))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _transient_code(code: str) -> bool:
    """No answer (transport) or a device too busy to take it: worth another try."""
    return code.startswith("telemetry.") or code in ("command.busy", "command.in_progress")
