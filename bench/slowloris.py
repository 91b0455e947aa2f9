"""Slowloris: 3,000 connections that never finish their headers, against `cerulean serve`.

Two servers side by side in one run, the same process (``cerulean serve --no-embedded
--no-embeddings``, nothing to load) with different settings:

- ``no header timeout``: ``--header-timeout 3600``, what uvicorn alone does (the old behaviour);
- ``cerulean``: the default ``--header-timeout`` (here ``--header-timeout 5`` to keep the run
  short).

For each: open N connections that send a request line and one header, then nothing; measure a
new client's ``GET /healthz`` latency (p50/max of 20) before and while they are held; then
watch how many of the held connections the server has closed at 1 s steps until the timeout
plus 5 s, and the server's open descriptors.

    .venv/bin/python bench/slowloris.py                  # 3,000 connections (about 1 minute)
    .venv/bin/python bench/slowloris.py --connections 500

Results: ``bench/slowloris.results.json``; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import cerulean_proc

REPO = cerulean_proc.REPO
RESULTS = REPO / "bench" / "slowloris.results.json"
PARTIAL = b"POST /openai/deployments/gpt-4/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n"
PARTIAL += b"Host: bench\r\n"


def _log(message: str) -> None:
    print(f">> {message}", flush=True)


def start_server(home: Path, header_timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    args = ["--no-embedded", "--no-embeddings", "--header-timeout", str(header_timeout)]
    return cerulean_proc.start(home, args, timeout=60)


def latencies(port: int, count: int = 20) -> dict[str, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert answer.status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run(header_timeout: float, connections: int, label: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cerulean-slowloris-"))
    process, port = start_server(home, header_timeout)
    try:
        idle = latencies(port)
        held: list[socket.socket] = []
        opened = time.monotonic()
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(PARTIAL)
            sock.setblocking(False)
            held.append(sock)
        opening_s = time.monotonic() - opened
        time.sleep(0.2)
        fds_held = open_fds(process.pid)
        during = latencies(port)
        selector = selectors.DefaultSelector()
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        closed_at: dict[int, float] = {}
        timeline = []
        watch = min(header_timeout, 10) + 5
        step_end = opened + 1
        while time.monotonic() - opened < watch and len(closed_at) < connections:
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    closed_at[sock.fileno()] = time.monotonic() - opened
                    selector.unregister(sock)
            if time.monotonic() >= step_end:
                timeline.append({"t_s": round(step_end - opened), "closed": len(closed_at)})
                step_end += 1
        fds_after = open_fds(process.pid)
        for sock in held:
            sock.close()
        times = sorted(closed_at.values())
        result = {
            "server": label,
            "header_timeout_s": header_timeout,
            "connections": connections,
            "opening_s": round(opening_s, 2),
            "healthz_idle": idle,
            "healthz_while_held": during,
            "server_fds_while_held": fds_held,
            "server_fds_after_watch": fds_after,
            "closed": len(closed_at),
            "closed_first_s": round(times[0], 2) if times else None,
            "closed_last_s": round(times[-1], 2) if times else None,
            "timeline": timeline,
        }
        _log(json.dumps({k: v for k, v in result.items() if k != "timeline"}))
        return result
    finally:
        cerulean_proc.stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    results = [
        run(3600, args.connections, "no header timeout (uvicorn alone)"),
        run(args.header_timeout, args.connections, "cerulean"),
    ]
    RESULTS.write_text(json.dumps({"runs": results}, indent=2) + "\n")
    _log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
