"""Fleet bench: 1,000 simulated devices on one mosquitto, the hub and the simulator as processes.

Starts its own mosquitto on a free loopback port (tests/fixtures/broker.py), then measures:

    online       seconds from starting the simulator until the hub lists every device online
    converge     a deploy with waves 1/10/100 to all devices: seconds per wave and until every
                 device reports the new version (state done)
    halt         a fresh set of devices, 20% of which refuse the model: the wave the rollout halts
                 in, seconds until it halted and rolled back, and how many devices outside that
                 wave were touched (must be 0)
    memory       peak RSS (VmHWM) of the hub and of the simulator process
    dashboard    with every device online and the rollout done: load time of the dashboard's
                 pages (``serve --http``) in headless chromium, from navigation until the page has
                 rendered its data (the device table: "Devices (N)" and its first page, 200 rows), median of 5 loads; and the JSON
                 routes alone over HTTP

    .venv/bin/python bench/fleet_bench.py [--devices 1000] [--per-connection 100] [--json out.json]
                                          [--skip-halt]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.control import HubClient  # noqa: E402
from fleet.errors import FleetError  # noqa: E402
from tests.fixtures.broker import Mosquitto, free_port, terminate  # noqa: E402
from tests.fleet.procs import GANGLION, make_artifact  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def spawn(folder: Path, name: str, *args: str) -> subprocess.Popen:
    log = open(folder / f"{name}.log", "ab")
    return subprocess.Popen([GANGLION, "fleet", *args], stdout=log, stderr=log, start_new_session=True)


def wait(fn, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except FleetError:          # the hub is still starting
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("bench step did not finish in time")


def online(hub: HubClient, prefix: str, n: int) -> bool:
    return len(hub.call("devices", {"online": True, "prefix": prefix})["devices"]) >= n


def follow(hub: HubClient, dep_id: str, final: tuple[str, ...], timeout: float) -> tuple[dict, list]:
    """Poll until the deployment is final with nothing in flight; returns (status, wave open times)."""
    t0, opened, last_wave = time.monotonic(), [], -1
    while time.monotonic() - t0 < timeout:
        st = hub.call("status", {"id": dep_id})
        if st["wave"] != last_wave:
            opened.append(round(time.monotonic() - t0, 2))
            last_wave = st["wave"]
        if st["state"] in final and not {"sending", "verifying", "rolling_back"} & set(st["counts"]):
            return st, opened + [round(time.monotonic() - t0, 2)]
        time.sleep(0.25)
    raise TimeoutError(f"deployment {dep_id} did not finish in {timeout}s")


def dashboard_load(base: str, n: int, dep_id: str, loads: int = 5) -> dict:
    """Median ms per page load in headless chromium, and per JSON route over plain HTTP."""
    from playwright.sync_api import sync_playwright    # optional: the dev extra; chromium from apt

    pages = {"overview": ("/", f"() => document.querySelector('[data-count=devices] b')?.textContent == '{n}'"),
             "devices": ("/devices", f"() => document.querySelector('h1').textContent == 'Devices ({n})' && "
                                        f"document.querySelectorAll('tr[data-device]').length == {min(n, 200)}"),
             "device": (f"/devices/ok-{1:0{len(str(n - 1))}d}", "() => document.querySelectorAll('.chart canvas').length == 4"),
             "deployment": (f"/deployments/{dep_id}", "() => document.getElementById('state')")}
    out = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        for name, (path, ready) in pages.items():
            times = []
            for _ in range(loads):
                t0 = time.perf_counter()
                page.goto(base + path)
                page.wait_for_function(ready, timeout=30_000)
                times.append((time.perf_counter() - t0) * 1000)
            out[f"page_{name}_ms"] = round(median(times), 1)
        browser.close()
    routes = {"overview": "/api/overview", "devices": "/api/devices", "deployment": f"/api/deployments/{dep_id}"}
    for name, route in routes.items():
        times = []
        for _ in range(loads):
            t0 = time.perf_counter()
            urllib.request.urlopen(base + route, timeout=30).read()
            times.append((time.perf_counter() - t0) * 1000)
        out[f"api_{name}_ms"] = round(median(times), 1)
    return out


def scenario(folder: Path, hub: HubClient, url: str, prefix: str, n: int, per_conn: int, fail: float,
             artifact: Path, dashboard: str | None = None) -> dict:
    t0 = time.monotonic()
    sim = spawn(folder, f"sim-{prefix}", "simulate", "--broker", url, "--devices", str(n), "--prefix", prefix,
                "--per-connection", str(per_conn), "--fail-rate", str(fail), "--workdir", str(folder / "devices"),
                "--tag", f"set={prefix}")
    try:
        wait(lambda: online(hub, prefix, n), 180)
        out = {"online_s": round(time.monotonic() - t0, 2)}
        dep = hub.deploy(artifact, {"to": f"tag:set={prefix}", "waves": [1, 10, 100], "max_failures": 0.05,
                                    "concurrency": 50, "shadow": 0})
        st, times = follow(hub, dep["id"], ("done", "halted"), 600)
        halted_wave = st["wave"]
        outside = [m for m in st["devices"] if m["wave"] > halted_wave and m["state"] != "pending"]
        out.update(state=st["state"], counts=st["counts"], wave_sizes=dep["waves"], wave_open_s=times[:-1],
                   finish_s=times[-1], final_wave=halted_wave, touched_outside=len(outside),
                   sim_peak_rss_mb=peak_rss_mb(sim.pid))
        if dashboard:
            out["dashboard"] = dashboard_load(dashboard, n, dep["id"])
        return out
    finally:
        terminate(sim, 30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-connection", type=int, default=100)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--skip-halt", action="store_true", help="only the converge scenario (and the dashboard)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    broker = Mosquitto(folder / "broker", persistence=False).start()
    http = f"127.0.0.1:{free_port()}"
    hub_proc = spawn(folder, "hub", "serve", "--broker", broker.url, "--db", str(folder / "fleet.sqlite"),
                     "--http", http)
    results = {"devices": args.devices, "per_connection": args.per_connection, "load": os.getloadavg()}
    try:
        with HubClient(broker.url, timeout=3) as probe:
            wait(lambda: probe.call("overview") is not None, 60)
        with HubClient(broker.url, timeout=30) as hub:
            art = make_artifact(folder / "m2.gpk", "2.0")
            results["converge"] = scenario(folder, hub, broker.url, "ok", args.devices, args.per_connection, 0.0, art,
                                           dashboard=f"http://{http}")
            if not args.skip_halt:
                results["halt"] = scenario(folder, hub, broker.url, "bad", args.devices, args.per_connection, 0.2,
                                           art)
        results["hub_peak_rss_mb"] = peak_rss_mb(hub_proc.pid)
        results["load_after"] = os.getloadavg()
    finally:
        terminate(hub_proc, 30)
        broker.stop()
    print(json.dumps(results, indent=2))
    c, h = results["converge"], results.get("halt")
    print(f"\n| scenario | devices online (s) | waves opened at (s) | finished (s) | state | touched outside |")
    print("|---|---|---|---|---|---|")
    for name, r in (("waves 1/10/100", c), ("20% failing", h)) if h else (("waves 1/10/100", c),):
        print(f"| {name} | {r['online_s']} | {r['wave_open_s']} | {r['finish_s']} | {r['state']} "
              f"(wave {r['final_wave']}) | {r['touched_outside']} |")
    print(f"\nhub peak RSS {results['hub_peak_rss_mb']} MB; simulator peak RSS {c['sim_peak_rss_mb']} MB")
    print(f"\n| dashboard ({args.devices} devices) | median ms |\n|---|---|")
    for key, value in c["dashboard"].items():
        print(f"| {key} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
