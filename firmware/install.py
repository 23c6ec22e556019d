"""``firmware install`` (apply): verify everything, write the inactive slot, switch atomically.

Order, chosen so that a SIGKILL or power cut between any two steps leaves a bootable root:

    1 verify     the whole bundle (signature, every member hash and size, names, types); nothing written
    2 policy     board matches; not a failed version; not a downgrade or the running version
                 (unless force); the running slot is validated (else installing would destroy the
                 only known-good slot, the inactive one)
    3 stage      members re-hashed while written to <slot>/../.<slot>.staging (a bundle that changes
                 between 1 and 3 is caught here); wheels unpacked into staging/site; syncfs
    4 release    state: the target slot is "empty" (it is about to be replaced)      -- atomic rename
    5 replace    delete the old slot folder, rename staging into place, fsync the parent
    6 switch     state: target "unvalidated", active = target, previous = old active -- atomic rename

Before 6 the old slot is still active and untouched; after 6 the new slot boots unvalidated and
``validate`` or the boot counter decides (see ``boot.py``). Stale staging folders from an
interrupted run are deleted at the next install. ``progress(step, detail)`` is called at every
step and every member, which the OTA handler turns into events (and the tests into SIGKILLs).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
from pathlib import Path

from core.errors import UsageError
from firmware import rootboard, wheelinstall
from firmware.bundle import MANIFEST, SIGNATURE, BundleManifest, check_member
from firmware.errors import BundleError, InstallError
from firmware.slots import MAX_BOOTS_RANGE, Layout, SlotState, find_version, fsync_dir, now, parse_version
from firmware.verify import verify

INSTALLED = "installed.json"


def install(bundle, root, trusted, force: bool = False, *, layout: Layout | None = None,
            progress=None, verified: BundleManifest | None = None, max_boots: int | None = None,
            cross: bool = False) -> dict:
    """Install ``bundle`` into the inactive slot under ``root``; returns what was done.

    ``verified``: the manifest a caller's own ``verify(bundle, trusted)`` returned (OTA verifies
    first to check the failed-version list), so a large bundle is not read and hashed twice. The
    members are re-hashed against it while they are staged, so a bundle changed since is refused.
    ``max_boots``: trial starts the new slot gets to validate (1..10; default: the board's
    ``[slots] max_boots``, else 3), stored with the slot for ``boot``. ``layout``: default, the
    one the root was installed with (``rootboard.resolve``). ``cross``: the root belongs to another
    machine (an SD card or sysroot prepared here), so the bundle's architecture and Python are not
    checked against this one; otherwise a mismatch is refused before anything is written."""
    say = progress or (lambda step, detail=None: None)
    layout = layout or rootboard.resolve(root)
    bound = check_max_boots(max_boots if max_boots is not None else layout.max_boots)
    say("verify", str(bundle))
    manifest = verified or verify(bundle, trusted)
    if not cross:
        check_machine(manifest, where=str(bundle))
    say("verified", len(manifest.members))
    with layout.lock():
        return _apply(bundle, manifest, layout, force, say, bound)


def check_machine(manifest: BundleManifest, *, where: str) -> None:
    """The bundle's wheels are built for one architecture and Python: on another they unpack fine
    and then fail the self-test, which marks the version failed for good. Refuse up front."""
    machine, python = platform.machine(), f"{sys.version_info.major}.{sys.version_info.minor}"
    want_arch, want_py = manifest.data.get("architecture"), manifest.data.get("python")
    problems = []
    if want_arch and want_arch != machine:
        problems.append(f"architecture {want_arch} (this machine: {machine})")
    if want_py and want_py != python:
        problems.append(f"Python {want_py} (this machine runs {python})")
    if problems:
        raise InstallError(f"bundle for board {manifest.board!r} needs {' and '.join(problems)}", where=where,
                           code="firmware.wrong_machine",
                           hint="build the bundle for this machine's board, or pass --cross when the root "
                                "is an SD card or sysroot for another machine")


def check_max_boots(value) -> int | None:
    """1..10 trial starts, or None (the state's default); a clear UsageError otherwise."""
    low, high = MAX_BOOTS_RANGE
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"max_boots must be an integer {low}..{high}; got {value!r}", where="--max-boots",
                         code="usage.max_boots",
                         hint="the number of starts a new slot gets to pass its health check")
    return value


def _apply(bundle, manifest, layout: Layout, force: bool, say, max_boots: int | None) -> dict:
    """Steps 2-6, under the root's lock."""
    backend = layout.backend()
    state = backend.load()
    if layout.board and layout.board != manifest.board:
        raise InstallError(f"bundle is for board {manifest.board!r}, --board says {layout.board!r}",
                           code="firmware.wrong_board", hint="build the bundle with --board " + layout.board)
    check_policy(state, manifest.version, manifest.board, force)
    record = _record_board(layout, manifest.board)
    target = state.inactive()
    say("stage", target)
    staging = _stage(bundle, manifest, layout, target, say)
    say("release", target)
    state.slots[target] = {"status": "empty"}
    if state.previous == target:
        state.previous = None
    backend.save(state)
    say("replace", target)
    slot_dir = layout.slot_dir(target)
    if slot_dir.exists():
        shutil.rmtree(slot_dir)
    os.replace(staging, slot_dir)
    fsync_dir(slot_dir.parent)
    say("switch", target)
    old = state.active
    state.slots[target] = {"status": "unvalidated", "version": manifest.version, "boot_count": 0,
                           "installed": now(), "board": manifest.board}
    if max_boots is not None:
        state.slots[target]["max_boots"] = max_boots
    state.previous = old if old and state.slots[old].get("status") == "valid" else None
    state.active, state.board = target, manifest.board
    state.note("installed", slot=target, version=manifest.version, previous=state.previous)
    backend.save(state)
    say("done", target)
    return {"slot": target, "version": manifest.version, "previous": state.previous,
            "status": "unvalidated", "max_boots": state.max_boots_of(target), "board_record": record}


def _record_board(layout: Layout, board: str) -> str:
    """Write the root's board record before anything else changes (``rootboard``). A root whose
    ``ganglion/`` folder cannot be written (a read-only rootfs with slots on /data) still installs;
    its later commands then need ``--board``, and the result says so."""
    try:
        rootboard.write(layout, board)
    except OSError as exc:
        return f"not written ({exc.strerror or exc}): pass --board to later commands"
    return str(rootboard.record_path(layout.root))


def check_policy(state: SlotState, version: str, board: str, force: bool) -> None:
    """Refuse what would be unsafe or a loop; ``force`` overrides all but a wrong board."""
    if state.board and state.board != board:
        raise InstallError(f"bundle is for board {board!r}, this root runs {state.board!r}",
                           code="firmware.wrong_board", hint="build the bundle with --board " + state.board)
    if force:
        return
    failed = find_version(state.failed_versions, version)
    if failed is not None:
        why = state.failed_versions[failed].get("reason", "")
        raise InstallError(f"version {version} already failed here ({why}); not retrying it",
                           code="firmware.failed_version",
                           hint="ship a fixed version with a higher number, or --force to try again")
    current = state.active_version()
    if current is None or state.slots[state.active].get("status") == "failed":
        return      # nothing runs that is worth protecting: a first install that failed is being retried
    if state.slots[state.active].get("status") == "unvalidated":
        raise InstallError(f"the running version {current} is not validated yet; installing now would "
                           f"overwrite the only known-good slot", code="firmware.pending",
                           hint="run 'ganglion firmware validate' or 'firmware revert' first")
    if parse_version(version) < parse_version(current):
        raise InstallError(f"downgrade from {current} to {version} refused", code="firmware.downgrade",
                           hint="pass --force to install an older version on purpose")
    if parse_version(version) == parse_version(current):
        raise InstallError(f"version {version} is already running", code="firmware.same_version",
                           hint="pass --force to reinstall it")


def _stage(bundle, manifest, layout: Layout, target: str, say) -> Path:
    """Second pass over the tar: write members into a fresh staging folder, re-hashing each."""
    for name in ("a", "b"):
        stale = layout.staging_dir(name)
        if stale.exists():
            shutil.rmtree(stale)
    staging = layout.staging_dir(target)
    staging.mkdir(parents=True)
    try:
        return _fill(bundle, manifest, staging, say)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused member leaves no half slot behind
        raise


def _fill(bundle, manifest, staging: Path, say) -> Path:
    where, expected, dist_infos, written = str(bundle), manifest.members, [], set()
    changed = BundleError("the bundle file changed after it was verified", where=where, code="firmware.hash",
                          hint="something modified the file during the install; transfer it again")
    with tarfile.open(bundle, mode="r:") as tar:
        for info in tar:
            check_member(info, where)
            if info.name in (MANIFEST, SIGNATURE):
                continue
            if info.name not in expected or info.name in written:
                raise changed
            written.add(info.name)
            say("write", info.name)
            dest = staging / info.name
            dest.parent.mkdir(exist_ok=True)
            _copy_checked(tar.extractfile(info), dest, expected[info.name], where, info.name)
            if info.name.startswith("wheels/"):
                dist_infos.append(wheelinstall.unpack(dest, staging, f"{where}: {info.name}"))
                dest.unlink()  # the unpacked site folder is what runs; RECORD proves it later
    if written != set(expected):
        raise changed
    if (staging / "wheels").exists():
        (staging / "wheels").rmdir()
    (staging / MANIFEST).write_bytes(manifest.raw)
    (staging / SIGNATURE).write_text(manifest.signature)
    (staging / INSTALLED).write_text(json.dumps({"dist_infos": sorted(dist_infos)}, indent=2))
    _fsync_tree(staging)
    return staging


def _copy_checked(src, dest: Path, entry: dict, where: str, name: str) -> None:
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != entry["sha256"]:
        raise BundleError(f"member {name} changed after it was verified", where=where,
                          code="firmware.hash", hint="the bundle file was modified during the install")


def _fsync_tree(top: Path) -> None:
    """Make the staging tree durable before the state points at it.

    One ``syncfs(2)`` of the staging folder's filesystem flushes every file and folder entry at
    once (what OSTree does); a wheel like numpy has a thousand files, and an fsync each made an
    install several times slower. Where syncfs is missing, every file and folder is fsynced.
    """
    if _syncfs(top):
        return
    for folder, _, files in os.walk(top):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def _syncfs(path: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)
