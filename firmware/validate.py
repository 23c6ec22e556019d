"""``firmware validate``: the health check that turns an unvalidated slot into a valid one, or reverts it.

Checks, in order (each a small function in ``CHECKS``; the first failure stops the list):
    files     every member kept in the slot matches the slot's signed manifest (sha256 and size);
              with ``trusted`` keys the manifest's signature is verified again
    wheels    every unpacked wheel file matches its wheel's RECORD (``wheelinstall.check``)
    selftest  in a child process with the slot's own site folder first on PYTHONPATH: the model
              loads and the recorded input gives the golden output within tolerance
    broker    (only with ``broker=``) an MQTT 5 CONNECT, with the daemon's user name and password
              (``broker_auth``), is accepted with CONNACK; ``mqtts://`` URLs (default port 8883) go
              over TLS with ``broker_tls`` (CA file, client cert/key). Unreachable, a TLS failure,
              refused credentials and any other refusal are told apart by error code and reason
Pass: the slot is marked ``valid``, its boot counter cleared. Fail: the slot is marked ``failed``
and the previous valid slot made active (``revert``); the first three checks judge the bundle, so
their failure refuses the version for good, while the broker check judges the world around it and
only counts a retry (``firmware/failures.py``). The report says which check failed, why, and the
class. A slot that is already valid is not checked again.

The daemon calls ``validate(root, ...)`` once its tree is up (after ``boot``); under qemu the
tests pass ``python=[qemu-aarch64-static, -L, SYSROOT, -cpu, cortex-a72, SYSROOT/usr/bin/python3.11]``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core import keys
from core.errors import GanglionError, UsageError
from firmware import failures, wheelinstall
from firmware.broker_probe import broker_address, check_broker  # noqa: F401 - broker_address is API
from firmware.errors import HealthCheckError, SlotError
from firmware.install import INSTALLED
from firmware.revert import revert
from firmware.rootboard import with_lock
from firmware.slots import Layout, now
from firmware.verify import hash_stream, load_trusted

CODE_ROOT = Path(__file__).resolve().parents[1]   # so a slot without a ganglion wheel still finds us


def check_files(slot: Path, ctx: dict) -> str:
    manifest_raw = (slot / "manifest.json").read_bytes()
    if ctx.get("trusted"):
        keys.verify(load_trusted(ctx["trusted"]), manifest_raw, (slot / "signature").read_text(),
                    where=str(slot))
    manifest = json.loads(manifest_raw)
    if manifest["version"] != ctx["version"]:
        raise HealthCheckError(f"slot holds version {manifest['version']}, state says {ctx['version']}",
                               where=str(slot), code="firmware.slot_mismatch")
    kept = [n for n in manifest["members"] if not n.startswith("wheels/")]
    for name in kept:            # streamed: a slot's model may be larger than the memory to spare
        entry = manifest["members"][name]
        with open(slot / name, "rb") as fh:
            digest, size = hash_stream(fh), fh.tell()
        if digest != entry["sha256"] or size != entry["size"]:
            raise HealthCheckError(f"slot file {name} does not match the manifest", where=str(slot),
                                   code="firmware.slot_damaged", hint="reinstall the bundle")
    return f"{len(kept)} files match"


def check_wheels(slot: Path, ctx: dict) -> str:
    dist_infos = json.loads((slot / INSTALLED).read_text())["dist_infos"]
    wheelinstall.require(slot, dist_infos)
    return f"{len(dist_infos)} wheels intact"


def check_selftest(slot: Path, ctx: dict) -> str:
    runner = ctx.get("runner") or run_selftest_process
    result = runner(slot, ctx)
    if not result.get("ok"):
        raise HealthCheckError(f"self-test failed: {result.get('reason')}", where=str(slot),
                               code="firmware.selftest_failed")
    return (f"self-test matches (max |diff| {result.get('max_abs_diff', 0):.3g}, {result.get('runtime')}, "
            f"{result.get('machine')}, python {result.get('python')})")


def run_selftest_process(slot: Path, ctx: dict) -> dict:
    """The slot's own wheels first on the path; a native crash is a failed check, not our crash."""
    python = list(ctx.get("python") or [sys.executable])
    env = dict(os.environ, PYTHONNOUSERSITE="1",
               PYTHONPATH=os.pathsep.join([str(slot / "site"), str(CODE_ROOT)]))
    cmd = python + ["-m", "firmware.selftest", "--slot", str(slot), "--threads", str(ctx.get("threads", 1))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=ctx.get("timeout", 300))
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"self-test did not finish in {ctx.get('timeout', 300)} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "reason": f"self-test process exited {proc.returncode}: {tail}"}


CHECKS = (("files", check_files), ("wheels", check_wheels), ("selftest", check_selftest),
          ("broker", check_broker))


@with_lock
def validate(root, *, trusted=None, broker: str | list[str] | None = None, broker_tls: dict | None = None,
             broker_auth: dict | None = None, python=None, runner=None, threads: int = 1, timeout: float = 300,
             layout: Layout | None = None) -> dict:
    """Health-check the active slot; mark it valid or revert. Returns a report dict with ``ok``.

    ``broker``: ``mqtt://`` / ``mqtts://`` URL or ``host[:port]``, or a failover list of them (the check
    passes when one answers, in order); ``broker_tls``: for mqtts,
    ``{"ca_file", "cert_file", "key_file"}`` (any may be absent); ``broker_auth``: ``{"username",
    "password"}`` sent in the CONNECT (else those of the URL). A broker that cannot be read is a
    UsageError before any check runs: a typo in the command line must not revert a slot. A failed
    report carries ``failed_check``, ``reason``, ``failure_class`` (``firmware/failures.py``) and
    ``revert`` (what ``revert`` did, including whether the version is now refused)."""
    broker_urls = [broker_address(b) for b in ([broker] if isinstance(broker, str) else broker or ())]
    broker_url = broker_urls[0] if broker_urls else None
    if broker_tls and any(broker_tls.values()) and not (broker_url and broker_url.tls):
        raise UsageError("TLS files are given but the broker is not an mqtts:// URL", where=str(broker_url),
                         hint="write the broker as mqtts://HOST[:PORT]", code="usage.broker_url")
    backend = layout.backend()
    state = backend.load()
    if state.active is None:
        raise SlotError("no firmware is installed here", where=str(layout.state_path()),
                        code="firmware.not_installed")
    name, slot_state = state.active, state.slots[state.active]
    report = {"slot": name, "version": slot_state.get("version"), "checks": {}}
    if slot_state.get("status") == "valid":
        return {**report, "ok": True, "already_valid": True}
    if slot_state.get("status") != "unvalidated":
        raise SlotError(f"slot {name} is {slot_state.get('status')}, not awaiting validation",
                        code="firmware.not_pending")
    ctx = {"trusted": trusted, "broker_url": broker_url, "broker_urls": broker_urls, "broker_tls": broker_tls,
           "broker_auth": broker_auth,
           "python": python, "runner": runner, "threads": threads, "timeout": timeout,
           "version": slot_state.get("version")}
    slot = layout.slot_dir(name)
    for check_name, check in CHECKS:
        try:
            report["checks"][check_name] = check(slot, ctx)
        except (GanglionError, OSError, ValueError, KeyError) as exc:
            reason = exc.message if isinstance(exc, GanglionError) else f"{type(exc).__name__}: {exc}"
            cls = failures.CHECK_CLASS[check_name]
            report.update(ok=False, failed_check=check_name, reason=reason, failure_class=cls)
            if isinstance(exc, GanglionError):
                report["error_code"] = exc.code
            report["revert"] = _revert(root, layout, f"{check_name}: {reason}", cls)
            return report
    state = backend.load()
    state.slots[name].update(status="valid", validated=now(), boot_count=0)
    failures.cleared(state, slot_state.get("version"))
    state.note("validated", slot=name, version=slot_state.get("version"))
    backend.save(state)
    return {**report, "ok": True}


def _revert(root, layout: Layout, reason: str, cls: str) -> dict:
    try:
        return revert(root, reason, mark_failed=True, failure_class=cls, layout=layout)
    except SlotError as exc:
        return {"error": exc.to_dict()}


def render(report: dict) -> str:
    """The validation report as lines a person reads (``firmware validate`` without --json)."""
    head = f"slot {report.get('slot')} ({report.get('version')})"
    checks = [f"  {name}: {text}" for name, text in report.get("checks", {}).items()]
    if report.get("ok"):
        return "\n".join([f"{head} is valid" + (" (it already was)" if report.get("already_valid") else ""),
                          *checks])
    lines = [f"{head} FAILED the {report.get('failed_check')} check ({report.get('failure_class')}): "
             f"{report.get('reason')}", *checks]
    rev = report.get("revert") or {}
    if "error" in rev:
        lines.append(f"  could not revert: {rev['error'].get('message')}")
        if rev["error"].get("hint"):
            lines.append(f"  hint: {rev['error']['hint']}")
        return "\n".join(lines)
    lines.append(f"  reverted from slot {rev.get('from')} to slot {rev.get('to')} ({rev.get('version')})")
    failure = rev.get("failure") or {}
    if failure.get("blacklisted"):
        lines.append(f"  version {report.get('version')} is refused from now on (install --force to retry it)")
    elif failure:
        lines.append(f"  version {report.get('version')} may be installed again "
                     f"({failure.get('count')} of {failure.get('max_retries')} tries used)")
    return "\n".join(lines)
