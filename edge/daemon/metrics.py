"""Daemon metrics: latency percentiles, throughput, queue depth, errors, restarts, CPU, RSS, temperature.

Latencies are kept per reporting window (a bounded deque) so each metrics record describes the
last N seconds, not the whole run. Process figures cover the daemon *and* its worker processes
(read from /proc, or psutil when installed), since that is what the board's memory budget pays.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np

WINDOW = 10_000
_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Metrics:
    def __init__(self, *, pids=lambda: [], queue_depth=lambda: 0, thermal_path: str | None = None):
        self._lock = threading.Lock()
        self._lat: deque[float] = deque(maxlen=WINDOW)
        self.totals = {"results": 0, "errors": 0, "dropped": 0, "restarts": 0, "crashes": 0}
        self._window = {"results": 0, "errors": 0}
        self._pids, self._queue_depth, self.thermal_path = pids, queue_depth, thermal_path
        self._t0 = time.monotonic()
        self._cpu0 = _cpu(os.getpid())      # workers are not started yet

    def observe(self, ok: bool, latency_ms: float) -> None:
        with self._lock:
            self._lat.append(latency_ms)
            key = "results" if ok else "errors"
            self.totals[key] += 1
            self._window[key] += 1

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.totals[key] = self.totals.get(key, 0) + n

    def snapshot(self) -> dict:
        """Figures for the window since the previous snapshot, then start a new window."""
        now = time.monotonic()
        with self._lock:
            lat = np.fromiter(self._lat, dtype=np.float64)
            self._lat.clear()
            window, self._window = self._window, {"results": 0, "errors": 0}
            totals = dict(self.totals)
        elapsed = max(now - self._t0, 1e-9)
        cpu = self._cpu_seconds()
        snap = {"window_s": round(elapsed, 3),
                "throughput": round((window["results"] + window["errors"]) / elapsed, 3),
                "results": window["results"], "errors": window["errors"],
                "queue_depth": self._queue_depth(), **{f"total_{k}": v for k, v in totals.items()},
                "cpu_percent": round(max(0.0, 100.0 * (cpu - self._cpu0) / elapsed), 1),
                "rss_mb": round(self.rss_bytes() / 2**20, 1), "temperature_c": self.temperature()}
        for q in (50, 95, 99):
            snap[f"latency_p{q}_ms"] = round(float(np.percentile(lat, q)), 3) if lat.size else None
        self._t0, self._cpu0 = now, cpu
        return snap

    def all_pids(self) -> list[int]:
        return [os.getpid(), *[p for p in self._pids() if p]]

    def rss_bytes(self) -> int:
        return sum(_rss(pid) for pid in self.all_pids())

    def _cpu_seconds(self) -> float:
        return sum(_cpu(pid) for pid in self.all_pids())

    def temperature(self) -> float | None:
        """Board thermal sensor (sysfs millidegrees Celsius), None when absent."""
        if not self.thermal_path:
            return None
        try:
            with open(self.thermal_path) as fh:
                raw = float(fh.read().strip())
        except (OSError, ValueError):
            return None
        return round(raw / 1000.0 if raw > 200 else raw, 1)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import psutil     # optional: not a device dependency (/proc is read without it)
        return psutil.Process(pid).memory_info().rss
    except Exception:      # psutil missing or the process is gone: report what we can
        return 0


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK       # utime + stime
    except (OSError, ValueError, IndexError):
        return 0.0


def percentiles(values, qs=(50, 95, 99)) -> dict:
    arr = np.asarray(list(values), dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(arr, q)), 4) if arr.size else None for q in qs}
