"""The listener's connection limits: a header-read timeout (slowloris) and idle keep-alive."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.server import raise_fd_limit
from cerulean.settings import Settings
from tests.conftest import KEY1, KEY2
from tests.live import live_server

HELD = 300
HEADER_TIMEOUT = 1.5


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(home=tmp_path / "home", key1=KEY1, key2=KEY2, **extra)  # type: ignore[arg-type]


def _open_partial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /openai/deployments/x/chat/completions HTTP/1.1\r\nHost: a\r\n")
    return sock


def _closed(sock: socket.socket, wait: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``wait`` s; None if still open."""
    sock.settimeout(wait)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_slowloris_connections_are_closed_on_schedule_and_new_clients_served(
    tmp_path: Path,
) -> None:
    raise_fd_limit()
    settings = _settings(tmp_path, header_timeout=HEADER_TIMEOUT)
    app = create_app(settings, {"fake-model": FakeEngine()})
    with live_server(app, settings) as base:
        port = int(base.rsplit(":", 1)[1])
        opened = time.monotonic()
        held = [_open_partial(port) for _ in range(HELD)]
        # While they hang, a new client is answered as usual.
        started = time.monotonic()
        answer = httpx.get(f"{base}/healthz", timeout=5)
        assert answer.status_code == 200 and time.monotonic() - started < 1.0
        assert time.monotonic() - opened < HEADER_TIMEOUT  # still inside their allowance
        # Every held connection gets the 408 and is closed, on schedule (not long after).
        replies = [_closed(sock, HEADER_TIMEOUT + 3) for sock in held]
        elapsed = time.monotonic() - opened
        for sock in held:
            sock.close()
        assert all(r is not None for r in replies), "a slow connection was never closed"
        assert elapsed < HEADER_TIMEOUT + 3
        first = replies[0]
        assert first is not None and first.startswith(b"HTTP/1.1 408 ")
        body = json.loads(first.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "RequestTimeout"


def test_headers_trickling_in_do_not_reset_the_clock(tmp_path: Path) -> None:
    settings = _settings(tmp_path, header_timeout=1.0)
    app = create_app(settings, {"fake-model": FakeEngine()})
    with live_server(app, settings) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = _open_partial(port)
        started = time.monotonic()
        closed_at = None
        for _ in range(30):  # one header line every 0.1 s, never the blank line
            try:
                sock.sendall(b"x-slow: 1\r\n")
            except OSError:
                closed_at = time.monotonic()
                break
            if _closed(sock, 0.1) is not None:
                closed_at = time.monotonic()
                break
        sock.close()
        assert closed_at is not None and closed_at - started < 2.0


def test_kept_alive_connection_idles_out_and_a_slow_second_request_too(tmp_path: Path) -> None:
    settings = _settings(tmp_path, header_timeout=1.0, keep_alive_timeout=1.0)
    app = create_app(settings, {"fake-model": FakeEngine()})
    with live_server(app, settings) as base:
        port = int(base.rsplit(":", 1)[1])
        for slow_second in (False, True):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            if slow_second:  # the second request's headers start but never finish
                time.sleep(0.5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            reply = _closed(sock, 4)
            sock.close()
            assert reply is not None, "the kept-alive connection was never closed"
            assert time.monotonic() - started < 2.5
