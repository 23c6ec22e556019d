"""systemd integration: sd_notify over $NOTIFY_SOCKET, the watchdog interval, and the unit file.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named by NOTIFY_SOCKET
(a leading '@' means the abstract namespace); see sd_notify(3). We send READY=1 once the model
is loaded, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on the way out. Without systemd
(no NOTIFY_SOCKET) every call is a no-op.
"""
from __future__ import annotations

import os
import shlex
import socket
import sys

from core.errors import EXIT_PERMANENT, EXIT_RESTART


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to systemd; False when not running under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.05)
    except ValueError:
        return None


def unit_file(args: list[str], *, watchdog_s: int = 30, user: str | None = None,
              description: str = "Ganglion inference daemon") -> str:
    """A systemd unit running ``ganglion run ARGS`` with Type=notify and a watchdog."""
    exe = os.path.join(os.path.dirname(sys.executable), "ganglion")
    cmd = " ".join(shlex.quote(a) for a in [exe, "run", *args])
    lines = ["[Unit]", f"Description={description}", "Wants=network-online.target",
             "After=network-online.target", "", "[Service]", "Type=notify", f"ExecStart={cmd}",
             f"WorkingDirectory={os.getcwd()}", f"WatchdogSec={watchdog_s}", "NotifyAccess=main", "Restart=on-failure", "RestartSec=2",
             f"RestartForceExitStatus={EXIT_RESTART}", f"RestartPreventExitStatus={EXIT_PERMANENT}",
             "TimeoutStopSec=20", "KillMode=mixed"]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
