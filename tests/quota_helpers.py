"""Helpers the rate-limit tests share."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from cerulean.quota import Limits


def drop_keys(url: str, prefix: str) -> None:
    with Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def assert_within_budget(admitted: list[tuple[float, int]], limits: Limits) -> None:
    """No window of either length, wherever it starts, holds more than its limit."""
    admitted = sorted(admitted)
    for end, _ in admitted:
        calls = [t for t, _ in admitted if end - limits.request_window < t <= end]
        tokens = sum(n for t, n in admitted if end - limits.token_window < t <= end)
        assert len(calls) <= limits.requests, (end, len(calls))
        assert tokens <= limits.tokens, (end, tokens)


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free port, which it may stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    client.ping()
                return self
            except RedisError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()
