"""A real uvicorn server (Cerulean's own configuration) in a thread, on a free port.

For tests of what only a real listener shows (connection timeouts, readiness across a Redis
outage) with the fake engine; the e2e tests run the real ``cerulean serve`` process instead.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from cerulean.server import uvicorn_config
from cerulean.settings import Settings

__all__ = ["free_port", "live_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: Any, settings: Settings, *, timeout: float = 30) -> Iterator[str]:
    """Serve ``app`` with :func:`cerulean.server.uvicorn_config`; yields the base URL."""
    port = settings.port or free_port()
    settings = settings.model_copy(update={"port": port, "log_level": "warning"})
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
