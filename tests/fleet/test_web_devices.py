"""``/api/devices`` pages and filters, driven in-process through the ASGI app (no server, no
browser: test_dashboard.py covers those) over a real registry and store. The hub's loop is the
calling thread here (``call(fn) = fn()``)."""
import asyncio
import json
import threading
import urllib.parse

import pytest

from edge.telemetry.topics import device_topic, envelope
from fleet.registry import Registry
from fleet.store import Store
from fleet.views import PAGE_DEFAULT, PAGE_MAX

pytest.importorskip("starlette")                  # optional: the fleet extra brings it
from fleet.web.app import create_app  # noqa: E402 - after the optional-dependency check


class Hub:
    """What create_app reads from the hub: its registry, store, loop door and stop flag."""

    def __init__(self, tmp_path, count: int):
        self.store = Store(tmp_path / "fleet.sqlite")
        self.registry = Registry(self.store)
        self.stopping = threading.Event()
        for i in range(count):          # every third one went offline (its Last Will) after its status
            self._status(f"cam{i:04d}", {"state": "online", "model": "m", "model_version": str(1 + i % 2),
                                         "tags": {"site": "lab" if i % 2 else "yard"}})
            if i % 3 == 0:
                self._status(f"cam{i:04d}", {"state": "offline", "reason": "lost"})

    def _status(self, device: str, data: dict) -> None:
        self.registry.ingest(device_topic(device, "status"), envelope(None, 0.0, device, "status", data), 1.0)

    @staticmethod
    def call(fn):
        return fn()


def get(app, path: str, **query) -> tuple[int, dict]:
    """One GET through the ASGI app: (status, JSON body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "headers": [(b"host", b"test")],
             "query_string": urllib.parse.urlencode(query).encode(), "server": ("test", 80), "client": ("t", 1)}
    sent, body = [], []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(body))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Hub(tmp_path_factory.mktemp("web"), 450))


def test_the_device_table_comes_in_pages_that_cover_it_once(app):
    status, first = get(app, "/api/devices")
    assert status == 200 and first["total"] == 450 and len(first["devices"]) == PAGE_DEFAULT
    seen, offset = [], 0
    while offset is not None:
        status, page = get(app, "/api/devices", limit=128, offset=offset)
        assert status == 200 and page["limit"] == 128 and page["offset"] == offset
        seen += [d["id"] for d in page["devices"]]
        offset = page["next"]
    assert seen == [f"cam{i:04d}" for i in range(450)]                # id order, no gap, no repeat


@pytest.mark.parametrize("query, total", [
    ({"online": "offline"}, 150), ({"online": "online"}, 300), ({"tag": "site=lab"}, 225),
    ({"version": "2", "online": "online"}, 150), ({"prefix": "cam00"}, 100), ({"prefix": "nope"}, 0)])
def test_filters_apply_before_paging(app, query, total):
    status, page = get(app, "/api/devices", limit=50, **query)
    assert status == 200 and page["total"] == total and len(page["devices"]) == min(50, total)
    assert page["next"] == (50 if total > 50 else None)
    if query.get("online"):
        assert all(d["online"] == (query["online"] == "online") for d in page["devices"])


def test_bad_paging_and_filters_are_refused_together(app):
    status, body = get(app, "/api/devices", limit=PAGE_MAX + 1, offset=-1, online="maybe", tag="site",
                       prefix="x" * 300)
    assert status == 400 and body["error"]["code"] == "usage.query"
    message = body["error"]["message"]
    for needle in ("limit must be", "offset must be", "online must be", "tag must be KEY=VALUE", "prefix is longer"):
        assert needle in message


@pytest.mark.parametrize("limit", ["0", "abc", "1.5"])
def test_a_limit_outside_its_range_is_refused(app, limit):
    status, body = get(app, "/api/devices", limit=limit)
    assert status == 400 and "limit must be" in body["error"]["message"]
