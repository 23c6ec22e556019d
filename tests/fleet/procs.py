"""Helpers for the fleet scenarios: the hub and the simulator as real processes, an artifact, polling."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core import artifact as gpk
from fleet.control import HubClient
from tests.fixtures.broker import terminate

GANGLION = str(Path(sys.executable).with_name("ganglion"))


def make_artifact(path: Path, version: str, key=None, size: int = 3000) -> Path:
    gpk.write(path, {"name": "sim", "version": version}, {"model.bin": os.urandom(size)}, private_key=key)
    return path


class Procs:
    """Every process a test starts, stopped by PID at the end (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp: Path, url: str):
        self.tmp, self.url, self.procs = tmp, url, []

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        return self.spawn_raw(name, "fleet", *args, "--broker", self.url)

    def spawn_raw(self, name: str, *args: str) -> subprocess.Popen:
        """``ganglion ARGS...`` with its output in NAME.log."""
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([GANGLION, *args], stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def hub(self, *extra: str) -> subprocess.Popen:
        return self.spawn("hub", "serve", "--db", str(self.tmp / "fleet.sqlite"), "--verify-timeout", "20", *extra)

    def sim(self, count: int, prefix: str = "sim", *extra: str) -> subprocess.Popen:
        return self.spawn(f"sim-{prefix}", "simulate", "--devices", str(count), "--prefix", prefix,
                          "--workdir", str(self.tmp / "devices"), "--metrics-interval", "0.5", *extra)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([GANGLION, "fleet", *args, "--broker", self.url], capture_output=True, text=True,
                             timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"ganglion fleet {args} exited {out.returncode}: {out.stderr}")
        return out

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            terminate(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))


def wait_for(fn, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:       # the hub may still be starting: keep asking until the deadline
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def hub_client(url: str, **kw) -> HubClient:
    return HubClient(url, timeout=10.0, **kw)
