"""Destructive test in the spirit of OSTree's: SIGKILL an install at every step and at random moments.

After every kill the device "restarts": ``boot`` picks a slot (counting a trial boot if the kill
came after the switch), ``validate`` runs the health check where one is pending, and then the
active slot must be valid, intact (files vs manifest, wheels vs RECORD) and pass its golden
self-test. A killed install must never produce a failed version: either the switch happened (the
new slot is complete, it was written before the switch) or it did not (the old slot runs).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware import selftest
from firmware.boot import boot
from firmware.install import install
from firmware.status import status
from firmware.validate import check_files, check_wheels, validate

REPO = Path(__file__).resolve().parents[2]
RANDOM_KILLS = 45          # random-moment kills wanted, on top of one kill per progress event
MAX_RANDOM_ATTEMPTS = 150  # a loaded machine finishes some installs before the kill lands


def in_process(slot, ctx):
    return selftest.run_slot(slot)


def driver(bundle, root, pub, kill_at: int, wait: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.firmware.install_driver", str(bundle), str(root), str(pub),
           str(kill_at)] + (["--wait"] if wait else [])
    return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def restart_and_check(root: Path) -> dict:
    """What a device does at start-up, then the invariant: a valid slot runs its self-test."""
    decision = boot(root)
    if decision["status"] == "unvalidated":
        report = validate(root, runner=in_process)
        assert report["ok"], report
    info = status(root)
    active = info["active"]
    slot = Path(info["slots"][active]["path"])
    assert info["slots"][active]["status"] == "valid"
    assert info["failed_versions"] == {}, info["failed_versions"]
    check_files(slot, {"version": info["slots"][active]["version"]})
    check_wheels(slot, {})
    assert selftest.run_slot(slot)["ok"]
    return info


@pytest.mark.slow
def test_sigkill_at_every_step_and_at_random_points_always_leaves_a_valid_slot(root, make_bundle, fw_keys):
    pub = fw_keys["public"]
    install(make_bundle("1.0.0"), root, pub)
    assert validate(root, runner=in_process)["ok"]
    versions = (f"1.{n}.0" for n in range(1, 1000))

    # A full run, timed, tells how many progress events there are and how long an install takes.
    proc = driver(make_bundle(next(versions)), root, pub, -1, wait=True)
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    out, err = proc.communicate("go\n", timeout=60)
    duration = time.monotonic() - started
    assert proc.returncode == 0, err
    n_events = int(out.split()[-1])
    assert n_events >= 10
    restart_and_check(root)

    outcomes = {"killed": 0, "completed": 0, "switched": 0}
    for kill_at in range(n_events):                     # every step, every member write
        before = status(root)["active"]
        proc = driver(make_bundle(next(versions)), root, pub, kill_at)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
        outcomes["killed"] += 1
        outcomes["switched"] += restart_and_check(root)["active"] != before

    rng = random.Random(20261121)
    random_kills = 0
    for _ in range(MAX_RANDOM_ATTEMPTS):                # random moments inside the install
        if random_kills >= RANDOM_KILLS:
            break
        before = status(root)["active"]
        proc = driver(make_bundle(next(versions)), root, pub, -1, wait=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(rng.uniform(0, duration * 1.5))
        proc.kill()
        proc.communicate(timeout=60)
        killed = proc.returncode == -signal.SIGKILL
        random_kills += killed
        outcomes["killed" if killed else "completed"] += 1
        outcomes["switched"] += restart_and_check(root)["active"] != before

    print(f"n_events={n_events} install_seconds={duration:.3f} outcomes={outcomes}")
    assert outcomes["killed"] >= n_events + RANDOM_KILLS >= 50, outcomes
    # Kills after the switch must have happened too, or the test proved only the easy half.
    assert outcomes["switched"] >= 1, outcomes
