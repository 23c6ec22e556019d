"""The broker connection as the daemon shows it: in status, as events, and on the console.

An unreachable broker used to be silent: the daemon said "online", inputs moved to done/ and
results went to the spool unseen. ``watch`` (a thread child of the tree, only with telemetry)
polls the telemetry client, reports every change as a ``broker`` event and a console line, and
warns once per outage when no connection has been made for ``warn_after_s`` -- saying where the
results are waiting.
"""
from __future__ import annotations

import sys
import time

WARN_AFTER_S = 10.0
POLL_S = 0.5


def broker_state(daemon) -> dict:
    """``{"url", "connected", "last_error", "spool_depth"}`` of the daemon's telemetry client."""
    tel = daemon.telemetry
    stats = tel.stats()
    return {"url": str(daemon.cfg.telemetry.broker), "connected": bool(stats.get("connected")),
            "last_error": stats.get("last_error"), "spool_depth": stats.get("spool_depth")}


def console(text: str, stream=None) -> None:
    """One readable line on stderr (the JSON event lines stay for machines)."""
    stream = stream or sys.stderr
    stream.write(f"ganglion: {text}\n")
    stream.flush()


def watch(daemon, stop, warn_after_s: float = WARN_AFTER_S) -> None:
    """Report connection changes; warn once per outage past ``warn_after_s`` without a connection."""
    was, since, warned = None, time.monotonic(), False
    while not stop.is_set():
        state = broker_state(daemon)
        now = time.monotonic()
        if state["connected"] != was:
            if was is not None or state["connected"]:
                _changed(daemon, state)
            was, since, warned = state["connected"], now, False
        elif not state["connected"] and not warned and now - since >= warn_after_s:
            warned = True
            why = f" ({state['last_error']})" if state["last_error"] else ""
            daemon.event({"event": "broker_unreachable", "broker": state["url"], "for_s": round(now - since, 1),
                          "last_error": state["last_error"], "spool_depth": state["spool_depth"]})
            console(f"warning: no connection to the broker {state['url']} for {now - since:.0f} s{why}; "
                    f"results and events wait in the spool ({state['spool_depth']} records) and go out "
                    "once it connects")
        stop.wait(POLL_S)


def _changed(daemon, state: dict) -> None:
    word = "connected to" if state["connected"] else "lost the connection to"
    daemon.event({"event": "broker", "state": "connected" if state["connected"] else "disconnected",
                  "broker": state["url"], "last_error": state["last_error"]})
    console(f"{word} the broker {state['url']}")
