"""``ganglion run --firmware-root ROOT``: run the model of the active A/B firmware slot.

Before the tree starts, ``firmware.boot.boot(root)`` decides which slot runs (counting trial
boots, reverting a failed slot). The slot's ``site`` folder goes first on the workers' import
path (spawned workers inherit the parent's ``sys.path``), its ``artifact/*.gpk`` is the model and
its ``config/daemon.toml`` the configuration, unless flags say otherwise. Once the daemon is
ready, a slot on trial is validated (``firmware.validate.validate``); if that fails the state
already points at the previous slot and the daemon exits with ``EXIT_RESTART`` so systemd
starts it again on the good slot.

Over MQTT, ``deploy-firmware.*`` (chunked) and ``deploy-firmware-url`` install a new bundle into
the other slot (``firmware.ota``, phases as ``events``) and reply ``{"outcome": "installed",
"restart": true}``; the daemon then exits with ``EXIT_RESTART``. The restarted daemon boots the new
slot on trial and validates it as above -- the new slot proves itself by running, as in Nerves: a
failed self-test (or a daemon that cannot start, via the boot counter) reverts to the old slot,
and the failed version is refused if it is sent again. The validation's broker check logs in with
``[telemetry]``'s own URL, TLS files, user name and password (``broker_probe``); a broker that is
down or refuses the login is a *transient* failure: reverted, but the version may be sent again a
bounded number of times (``firmware/failures.py``). The root's layout comes from its board record
(``firmware/rootboard.py``), so a board with custom ``[slots]`` needs no flag here.

A slot on trial whose daemon cannot become ready (its model does not load, its workers crash) is
reverted at once by ``fail_trial`` -- it could not pass validation anyway -- and the daemon exits
with ``EXIT_RESTART``; the ``reverted`` event is spooled and goes out with the next start. Other
failures before the tree is up (a broken config in the slot) are left to ``boot``'s counter.

A root without firmware (``firmware.not_installed``) is not an error: the daemon runs from flags.

This module is the daemon's whole firmware integration, on the firmware layer (firmware sits
above the runtime: edge never imports firmware). It plugs itself into ``edge.daemon.tree``
(``FIRMWARE_HOOK``) and exports the command as ``run``, which ``edge/cli.py`` lists for
``ganglion run``.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

from core.errors import EXIT_RESTART, GanglionError, InputError   # EXIT_RESTART: 75, "start me again"
from edge.daemon import cli as daemon_cli
from edge.daemon import tree
from edge.daemon.config import DaemonTelemetry
from firmware import ota
from firmware.boot import boot as fw_boot
from firmware.failures import PERMANENT
from firmware.revert import revert
from firmware.validate import validate

log = logging.getLogger("ganglion.daemon.firmware")


def boot(root: str) -> dict | None:
    try:
        return fw_boot(root)
    except GanglionError as exc:
        if exc.code == "firmware.not_installed":
            return None
        raise


def slot_defaults(info: dict) -> tuple[str | None, str | None]:
    """(model path, config path) found in the booted slot."""
    slot = Path(info["path"])
    gpks = sorted((slot / "artifact").glob("*.gpk"))
    if len(gpks) > 1:
        raise InputError(f"slot holds {len(gpks)} artifacts; pass --model", where=str(slot / "artifact"),
                         code="input.ambiguous")
    config = slot / "config" / "daemon.toml"
    return (str(gpks[0]) if gpks else None), (str(config) if config.is_file() else None)


def use_site(info: dict) -> None:
    site = info.get("site")
    if site and Path(site).is_dir() and site not in sys.path:
        sys.path.insert(0, site)


def validate_trial(daemon, root: str, info: dict) -> int:
    """After ready: validate a slot on trial; the exit code to stop with, or 0 to keep running."""
    if info.get("action") != "trial":
        return 0
    report = validate(root, **broker_probe(daemon.cfg.telemetry),
                      trusted=list(daemon.cfg.firmware.trusted_keys) or None)
    phase = "validated" if report.get("ok") else "reverted"
    daemon.event({"event": "firmware", "phase": phase, "slot": info.get("slot"), "version": info.get("version"),
                  **{k: report[k] for k in ("failed_check", "reason", "failure_class", "error_code")
                     if k in report}})
    return 0 if report.get("ok") else EXIT_RESTART


def broker_probe(telemetry: DaemonTelemetry) -> dict:
    """``validate``'s broker arguments from the daemon's own ``[telemetry]``: the URL as configured
    (mqtt:// or mqtts://, the default port follows the scheme), for mqtts the TLS files telemetry
    connects with, and its user name and password (else those in the URL), so the probe logs in
    exactly as telemetry will. Empty when no broker is configured (no broker check)."""
    if not telemetry.broker:
        return {}
    out = {"broker": list(telemetry.brokers) or telemetry.broker,     # the failover list when there is one
           "broker_tls": None, "broker_auth": None}
    if telemetry.url.tls:
        out["broker_tls"] = {"ca_file": telemetry.ca_file, "cert_file": telemetry.cert_file,
                             "key_file": telemetry.key_file}
    if telemetry.username is not None or telemetry.password is not None:
        out["broker_auth"] = {"username": telemetry.username, "password": telemetry.password}
    return out


def register_ota(daemon, telemetry, root: str) -> None:
    """``deploy-firmware.*`` over MQTT; needs firmware keys (bundles are always verified)."""
    trusted = list(daemon.cfg.firmware.trusted_keys)
    if not trusted:
        daemon.event({"event": "firmware", "phase": "ota_disabled",
                      "reason": "no firmware keys configured ([firmware] trusted_keys, --firmware-key)"})
        return
    emit = lambda payload: telemetry.record("events", payload)  # noqa: E731 - a one-line adapter
    transfer = ota.on_complete(root, trusted, emit, validate_now=False)
    url = ota.url_handler(root, trusted, emit, validate_now=False)

    def restart_after(reply: dict) -> dict:
        if reply.get("restart"):
            daemon.exit_code = EXIT_RESTART
            threading.Timer(1.0, daemon.stop).start()    # let the reply go out first
        return reply
    telemetry.register_transfer(ota.VERB, lambda path, info, args: restart_after(transfer(path, info, args)))
    telemetry.register_command(ota.URL_VERB, lambda args: restart_after(url(args)))


def fail_trial(root: str, info: dict, exc: GanglionError, cfg, make_telemetry) -> bool:
    """The daemon could not start on ``info``'s slot: revert now if that slot is on trial.

    Returns True when it reverted (the caller exits with ``EXIT_RESTART``), False otherwise (a
    valid slot that fails to start is not reverted here: the cause may be outside the slot).
    ``make_telemetry(cfg)`` opens the daemon's spool again for the event (``tree.make_telemetry``)."""
    if info.get("action") != "trial":
        return False
    reason = f"the daemon could not start on this slot: {exc.message}"
    try:   # its model does not load or its workers crash: the bundle is bad, retrying cannot help
        done = revert(root, reason, mark_failed=True, failure_class=PERMANENT)
    except GanglionError as err:          # no valid slot to go back to: the boot counter decides
        log.error("cannot revert the trial slot: %s", err.message)
        return False
    event = {"event": "firmware", "phase": "reverted", "slot": info.get("slot"), "version": info.get("version"),
             "failed_check": "start", "reason": reason, "failure_class": PERMANENT, "revert": done,
             "error": exc.to_dict()}
    sys.stderr.write(json.dumps({"kind": "events", **event}, default=str) + "\n")
    _spool_event(cfg, event, make_telemetry)
    return True


def _spool_event(cfg, event: dict, make_telemetry) -> None:
    """The daemon's telemetry is already stopped: put the event in its spool for the next start."""
    try:
        telemetry = make_telemetry(cfg)
    except GanglionError as err:
        log.warning("cannot spool the revert event: %s", err.message)
        return
    if telemetry is None:
        return
    try:
        telemetry.record("events", event)
    except GanglionError as err:
        log.warning("cannot spool the revert event: %s", err.message)
    finally:
        telemetry.spool.close()


tree.FIRMWARE_HOOK = sys.modules[__name__]
run = daemon_cli.run       # ``ganglion run``, with --firmware-root served by this module
