"""The gateway's own cost, without an engine: Cerulean in front of an instant upstream.

A tiny OpenAI-compatible upstream (raw asyncio, no framework) streams a fixed answer of
``--tokens`` chunks as fast as the socket takes it, so every CPU second the gateway spends is
the gateway's: parsing the upstream's events, building Azure's chunks, the middleware, the
rate limiter. The same load runs straight at the upstream and through ``cerulean serve
--no-embedded`` in one run; the report gives the gateway's CPU seconds per 1,000 requests and
the time to first byte each path adds. ``--profile out.svg`` records the gateway with py-spy
(if installed) during the load.

    .venv/bin/python bench/gateway_overhead.py --requests 400 --clients 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

KEY = "bench-gateway-overhead-key-0123456789abcdef"
DEPLOYMENT = "gpt-35-turbo"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- the upstream


def _chunk(payload: dict[str, Any]) -> bytes:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _answer(tokens: int) -> list[bytes]:
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    parts = [_chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    for i in range(tokens):
        delta = {"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}
        parts.append(_chunk({**base, "choices": [delta]}))
    done = {"index": 0, "delta": {}, "finish_reason": "length"}
    parts.append(_chunk({**base, "choices": [done]}))
    usage = {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens}
    parts.append(_chunk({**base, "choices": [], "usage": usage}))
    tail = b"data: [DONE]\n\n"
    parts.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    return parts


async def _serve_upstream(port: int, tokens: int, delay: float) -> None:
    pieces = _answer(tokens)
    stream = b"".join(pieces)
    models = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"POST"):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    if delay:  # an engine's pace: one event at a time
                        for piece in pieces[:-1]:
                            writer.write(piece)
                            await writer.drain()
                            await asyncio.sleep(delay)
                        writer.write(pieces[-1])
                    else:
                        writer.write(stream)
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(models), models)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------- the load


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[float, int]:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 64,
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if line.startswith("data:") and "content" in line:
                if not first:
                    first = time.perf_counter() - started
                chunks += 1
    return first, chunks


async def load(url: str, headers: dict[str, str], clients: int, requests: int) -> dict[str, Any]:
    ttfts: list[float] = []
    chunk_counts: list[int] = []
    per_client = max(1, requests // clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop() -> None:
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            for _ in range(per_client):
                ttft, n = await _one(client, url, headers)
                ttfts.append(ttft)
                chunk_counts.append(n)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "requests": len(ttfts),
        "wall_s": round(wall, 3),
        "req_per_s": round(len(ttfts) / wall, 1),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 2),
        "chunks_min": min(chunk_counts),
    }


# ---------------------------------------------------------------------------- the run


def _cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"cerulean {' '.join(args)} failed:\n{done.stderr}")


async def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="between the upstream's events")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy flame graph (svg)")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()

    up_port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--upstream",
            str(up_port),
            str(args.tokens),
            str(args.delay_ms / 1000),
        ]
    )
    home = Path(tempfile.mkdtemp(prefix="cerulean-gw-overhead-")) / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERULEAN_")}
    env.update({"CERULEAN_HOME": str(home), "CERULEAN_KEY1": KEY})
    gateway: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        await _wait(f"http://127.0.0.1:{up_port}/v1/models")
        _cli(env, "upstreams", "add", "fast", "--url", f"http://127.0.0.1:{up_port}/v1",
             "--flavor", "openai", "--model", "m")  # fmt: skip
        _cli(env, "deployments", "create", DEPLOYMENT, "--upstream", "fast",
             "--capacity", "1000000")  # fmt: skip
        gw_port = free_port()
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cerulean",
                "serve",
                "--no-embedded",
                "--port",
                str(gw_port),
                "--log-level",
                "warning",
            ],  # fmt: skip
            env=env,
        )
        await _wait(f"http://127.0.0.1:{gw_port}/healthz")
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        through = (
            f"http://127.0.0.1:{gw_port}/openai/deployments/{DEPLOYMENT}/chat/completions"
            "?api-version=2024-10-21"
        )
        headers = {"api-key": KEY}
        await load(through, headers, 1, 20)  # warm
        if args.profile is not None and shutil.which("py-spy"):
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-p",
                    str(gateway.pid),
                    "-o",
                    str(args.profile),
                    "-r",
                    "200",
                    "--format",
                    "raw",
                ]  # fmt: skip
            )
            await asyncio.sleep(1)
        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            bare = await load(direct, {}, clients, args.requests)
            before = cpu_seconds(gateway.pid)
            gw = await load(through, headers, clients, args.requests)
            spent = cpu_seconds(gateway.pid) - before
            row = {
                "clients": clients,
                "bare": bare,
                "gateway": gw,
                "gateway_cpu_s_per_1000_requests": round(spent * 1000 / gw["requests"], 2),
                "ttft_p50_added_ms": round(gw["ttft_p50_ms"] - bare["ttft_p50_ms"], 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.output is not None:
            args.output.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        for proc in (gateway, upstream):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--upstream":
        asyncio.run(_serve_upstream(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    else:
        asyncio.run(main())
