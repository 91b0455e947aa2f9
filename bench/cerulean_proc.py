"""A `cerulean serve` process of this checkout on a free port, for the bench scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
KEY = "s" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    home: Path,
    args: list[str],
    *,
    log: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``cerulean serve ARGS`` with ``home``; returns once /healthz answers 200."""
    port = free_port()
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env["CERULEAN_KEY1"] = KEY
    env.update(extra)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "cerulean", "serve", "--port", str(port), "--home", str(home)]
    argv += ["--log-level", "warning", *args]
    sink = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cerulean serve exited ({process.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("cerulean serve did not become healthy")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
