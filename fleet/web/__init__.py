"""The hub's web dashboard: an ASGI app (starlette) served by uvicorn inside ``ganglion fleet serve``.

    app.py      pages (HTML shells) + their JSON twins under /api, the SSE change stream, actions
    auth.py     the operator token, scrypt-hashed in the hub's database
    server.py   uvicorn on a thread of the hub process (``serve --http HOST:PORT``)
    static/     dashboard.js/css and uPlot (MIT, vendored from npm: hubs run offline, no CDN)
"""
