"""Screenshots of the fleet dashboard for docs/fleet.md, taken in headless chromium.

Starts a mosquitto on a free port, the hub with ``--http``, 40 simulated devices (10% of them
refuse new models) and a rollout, then saves the overview, device-table, device and deployment
pages to docs/img/fleet-*.png. Needs the dev extra (playwright) and /usr/bin/chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/img]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.fixtures.broker import Mosquitto, free_port  # noqa: E402
from tests.fleet.procs import Procs, hub_client, make_artifact, wait_for  # noqa: E402

TOKEN = "screenshot-operator-token-0000"


def stage(tmp: Path, procs: Procs, port: int) -> str:
    """The hub, 40 devices and a rollout part-way: returns the deployment id."""
    (tmp / "ops.token").write_text(TOKEN)
    procs.hub("--http", str(port), "--operator-token-file", str(tmp / "ops.token"))
    procs.sim(36, "cam", "--tag", "site=berlin", "--fail-rate", "0.1")
    procs.sim(4, "gate", "--tag", "site=lyon")
    with hub_client(procs.url) as client:
        wait_for(lambda: len(client.call("devices", {"online": True})["devices"]) >= 40, what="40 devices")
    art = make_artifact(tmp / "detector-2.gpk", "2.1")
    dep_id = procs.cli("deploy", str(art), "--to", "tag:site=berlin", "--waves", "10,40,100",
                       "--max-failures", "30%", "--concurrency", "2").stdout.strip()
    wait_for(lambda: json.loads(procs.cli("status", dep_id, "--json").stdout)["wave"] >= 1, what="wave 2 open")
    return dep_id


def shoot(base: str, dep_id: str, out: Path) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        for name, path, ready in (("overview", "/", "[data-count=devices]"),
                                  ("devices", "/devices?tag=site%3Dberlin", "tr[data-device]"),
                                  ("deployment", f"/deployments/{dep_id}", "#state"),
                                  ("device", "/devices/cam-03", ".chart canvas")):
            page.goto(base + path)
            page.wait_for_selector(ready)
            if name == "device":
                time.sleep(6)                 # let the live charts collect a few metrics windows
            page.screenshot(path=str(out / f"fleet-{name}.png"))
            print(out / f"fleet-{name}.png")
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fleet-shots-"))
    broker = Mosquitto(tmp / "broker").start()
    procs, port = Procs(tmp, broker.url), free_port()
    try:
        dep_id = stage(tmp, procs, port)
        shoot(f"http://127.0.0.1:{port}", dep_id, out)
    except (AssertionError, subprocess.SubprocessError):
        print(procs.logs(), file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        broker.stop()


if __name__ == "__main__":
    main()
