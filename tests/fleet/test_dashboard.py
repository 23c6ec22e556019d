"""The hub's web dashboard in a real headless browser (Debian's chromium driven by playwright).

One real mosquitto, the hub (``serve --http``) and the simulator as real processes, shared by the
module's tests (starting them is most of the cost). Playwright never downloads a browser: it drives
/usr/bin/chromium (scripts/setup.sh installs it).
"""
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.broker import Mosquitto, free_port
from tests.fleet.procs import Procs, hub_client, make_artifact, wait_for

sync_api = pytest.importorskip("playwright.sync_api")      # optional: the dev extra brings it
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "test-operator-token-0123456789"
pytestmark = [pytest.mark.mqtt, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium (scripts/setup.sh)")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    broker = Mosquitto(tmp / "mosquitto").start()
    procs = Procs(tmp, broker.url)
    (tmp / "ops.token").write_text(TOKEN + "\n")
    procs.port = free_port()
    try:
        procs.hub("--http", str(procs.port), "--operator-token-file", str(tmp / "ops.token"))
        procs.sim(20, "sim", "--tag", "site=lab")
        procs.late = procs.sim(1, "late")             # its own connection: killing it fires its Last Will
        with hub_client(procs.url) as client:
            wait_for(lambda: len(client.call("devices", {"online": True})["devices"]) >= 21, what="21 devices")
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{procs.port}/api/overview", timeout=2),
                 what="the dashboard")
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()
        broker.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        # root in a container has no user namespaces for chromium's sandbox
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, fleet):
    context = browser.new_context(base_url=f"http://127.0.0.1:{fleet.port}")
    yield context.new_page()
    context.close()


def test_overview_and_device_table_list_the_fleet(page):
    page.goto("/")
    sync_api.expect(page.locator("[data-count=devices] b")).to_have_text("21")
    page.goto("/devices?tag=site%3Dlab")
    sync_api.expect(page.locator("tr[data-device]")).to_have_count(20)
    assert page.locator("tr[data-device=late-0]").count() == 0
    page.goto("/devices")
    sync_api.expect(page.locator("tr[data-device]")).to_have_count(21)
    sync_api.expect(page.locator("tr[data-device=sim-17] .version")).to_have_text("1.0")


def test_device_page_charts_fill_from_the_live_stream(page):
    page.goto("/devices/sim-13")
    sync_api.expect(page.locator(".chart canvas")).to_have_count(4)
    sync_api.expect(page.locator(".live")).to_have_text("live")
    page.wait_for_function("() => document.querySelectorAll('.u-legend').length === 4")
    # metrics arrive every 0.5 s: within a few seconds the series hold several points
    page.wait_for_function("() => series.t.length >= 3 && series.p95_ms.every(v => v > 0)", timeout=10_000)


def test_a_device_going_offline_appears_without_reload(page, fleet):
    page.goto("/devices")
    row = page.locator("tr[data-device=late-0] .state")
    sync_api.expect(row).to_have_text("online")
    page.evaluate("window.sameDocument = true")           # gone if the page reloaded
    fleet.kill(fleet.late)
    started = time.monotonic()
    sync_api.expect(row).to_have_text("offline", timeout=2_000)
    print(f"offline shown {time.monotonic() - started:.2f} s after the kill")
    assert page.evaluate("window.sameDocument") is True


def post(fleet, dep_id: str, verb: str, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{fleet.port}/api/deployments/{dep_id}/{verb}",
                                     method="POST", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_pause_needs_the_operator_token_and_pauses_a_running_rollout(page, fleet, tmp_path):
    art = make_artifact(tmp_path / "m2.gpk", "2.0")
    dep_id = fleet.cli("deploy", str(art), "--to", "tag:site=lab", "--waves", "10,20,100",
                       "--concurrency", "1").stdout.strip()
    page.goto(f"/deployments/{dep_id}")
    sync_api.expect(page.locator("#state")).to_have_text("running")
    sync_api.expect(page.locator("tr", has_text="(not open)")).not_to_have_count(0)
    page.click("button[data-action=pause]")                             # no token typed in
    sync_api.expect(page.locator("#msg")).to_contain_text("refused")
    assert post(fleet, dep_id, "pause", "wrong-token-wrong-token")[0] == 401
    assert json.loads(fleet.cli("status", dep_id, "--json").stdout)["state"] == "running"
    page.fill("#token", TOKEN)
    page.click("button[data-action=pause]")
    sync_api.expect(page.locator("#msg")).to_have_text("pause: paused")
    sync_api.expect(page.locator("#state")).to_have_text("paused")
    assert json.loads(fleet.cli("status", dep_id, "--json").stdout)["state"] == "paused"
    assert post(fleet, dep_id, "pause", TOKEN)[0] == 409                 # the CLI's rule: not running
    assert post(fleet, dep_id, "abort", TOKEN) == (200, {"id": dep_id, "state": "aborted"})
    sync_api.expect(page.locator("#state")).to_have_text("aborted")      # via the stream, no reload
