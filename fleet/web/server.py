"""uvicorn on a thread of the hub process: ``ganglion fleet serve --http 127.0.0.1:8080``."""
from __future__ import annotations

import threading

import uvicorn

from core.errors import UsageError
from fleet.web.app import create_app


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT``; the host defaults to 127.0.0.1 (the dashboard is local unless asked)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise UsageError(f"--http {text!r}: expected PORT or HOST:PORT, e.g. 127.0.0.1:8080", code="usage.http")
    return host.strip("[]") or "127.0.0.1", number


class Dashboard:
    def __init__(self, hub, address: str):
        host, port = parse_address(address)
        # uvicorn installs no signal handlers off the main thread: the hub's SIGTERM handler stays in charge
        config = uvicorn.Config(create_app(hub), host=host, port=port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fleet-http", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self) -> "Dashboard":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
