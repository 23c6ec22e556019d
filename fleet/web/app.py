"""The dashboard's routes: HTML pages, their JSON twins, the live stream, operator actions.

    GET  /                      overview            /api/overview  (+ /api/deployments)
    GET  /devices?tag&version&online&page          /api/devices?tag&version&online&prefix&limit&offset
                                                   (a page: {devices, total, offset, limit, next})
    GET  /devices/{id}          live charts, events  /api/devices/{id}
    GET  /deployments/{id}      waves, failures      /api/deployments/{id}
    GET  /api/stream[?device=ID]  server-sent events: ``change`` per change-stream entry (id = its
                                  id, so a reconnect resumes with Last-Event-ID), ``health`` when the
                                  device's metrics move
    POST /api/deployments/{id}/{pause|resume|abort}   Authorization: Bearer <operator token>

Pages are shells; static/dashboard.js renders them from the JSON routes and the stream. Every
read and action runs on the hub's loop (``hub.call``), the same path as the broker commands, so
a dashboard pause is exactly ``ganglion fleet pause``.
"""
from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core.errors import GanglionError
from fleet import deployments, views
from fleet.errors import FleetError
from fleet.web import auth

STATIC = Path(__file__).with_name("static")
POLL_S = 0.25                    # how often the stream looks for new change entries
ACTIONS = ("pause", "resume", "abort")
STATUS = {"fleet.unknown_deployment": 404, "fleet.unknown_device": 404, "fleet.state": 409,
          "fleet.unauthorized": 401}


CHARTS = '<link rel="stylesheet" href="/static/uPlot.min.css"><script src="/static/uPlot.iife.min.js"></script>'


def _page(kind: str, title: str, ref: str = "") -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} - ganglion fleet</title>
{CHARTS if kind == "device" else ""}<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><nav><b>ganglion fleet</b> <a href="/">overview</a> <a href="/devices">devices</a>
<span id="live" class="live">connecting</span></nav>
<main id="app" data-page="{kind}" data-ref="{html.escape(ref)}"><h1>{html.escape(title)}</h1></main>
<script src="/static/dashboard.js"></script></body></html>""")


def _error(exc: GanglionError) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=STATUS.get(exc.code, 400))


def create_app(hub) -> Starlette:
    async def on_loop(fn):
        return await run_in_threadpool(hub.call, fn)

    async def api(fn):
        try:
            return JSONResponse(await on_loop(fn))
        except GanglionError as exc:
            return _error(exc)

    async def overview(request):
        return await api(lambda: {**views.overview(hub.registry, hub.store),
                                  "list": views.deployments(hub.store)[:20]})

    async def device_list(request):
        return await api(lambda: views.device_page(hub.registry, request.query_params))

    async def device(request):
        return await api(lambda: views.device(hub.registry, hub.store, request.path_params["id"]))

    async def deployment(request):
        return await api(lambda: views.deployment(hub.store, request.path_params["id"]))

    async def action(request: Request):
        verb, dep_id = request.path_params["verb"], request.path_params["id"]
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if verb not in ACTIONS:
            return JSONResponse({"error": {"code": "usage.action", "message": f"no action {verb!r}"}}, 404)
        if not await run_in_threadpool(auth.check, hub.store, token):
            return _error(auth.TokenError("the operator token is missing or wrong", where="dashboard",
                                          hint="the token `fleet serve` printed or --operator-token-file holds"))
        return await api(lambda: deployments.transition(hub.store, hub.rollouts, verb, dep_id))

    async def stream(request: Request):
        watch = request.query_params.get("device")
        last = request.headers.get("last-event-id") or request.query_params.get("since")
        since = int(last) if last and last.isdigit() else (await on_loop(lambda: hub.store.query(
            "SELECT COALESCE(MAX(id), 0) AS id FROM changes")))[0]["id"]
        return StreamingResponse(_events(hub, on_loop, request, since, watch), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    pages = [Route("/", lambda r: _page("overview", "Fleet overview")),
             Route("/devices", lambda r: _page("devices", "Devices")),
             Route("/devices/{id}", lambda r: _page("device", r.path_params["id"], r.path_params["id"])),
             Route("/deployments/{id}", lambda r: _page("deployment", r.path_params["id"], r.path_params["id"]))]
    return Starlette(routes=pages + [
        Route("/api/overview", overview), Route("/api/devices", device_list),
        Route("/api/devices/{id}", device), Route("/api/deployments/{id}", deployment),
        Route("/api/deployments/{id}/{verb}", action, methods=["POST"]), Route("/api/stream", stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static")])


async def _events(hub, on_loop, request: Request, since: int, watch: str | None):
    """The SSE body: change entries after ``since``, and the watched device's health as it moves."""
    seen_metrics = None
    yield "retry: 1000\n\n"
    while not hub.stopping.is_set() and not await request.is_disconnected():
        try:
            rows = await on_loop(lambda: views.changes(hub.store, since, 500))
        except FleetError:              # the hub is stopping: end the stream, the browser retries
            return
        for row in rows:
            since = row["id"]
            yield f"id: {row['id']}\nevent: change\ndata: {json.dumps(row)}\n\n"
        if watch:
            row = hub.registry.devices.get(watch)           # a dict read: the loop replaces values whole
            if row and row.get("metrics_at") != seen_metrics:
                seen_metrics = row.get("metrics_at")
                yield f"event: health\ndata: {json.dumps({'t': seen_metrics, **row['health']})}\n\n"
        if not rows:
            await asyncio.sleep(POLL_S)
