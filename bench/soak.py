"""Soak: `cerulean serve` under mixed, faulty load for 10 minutes or more, its RSS sampled.

One server (the embedded model and the embedding model, 8 slots) and ``--clients`` looping
clients; each picks its next request in turn from:

- a streaming chat completion read to the end;
- a streaming chat completion the client hangs up on after its first content chunk;
- a chat completion with ``n=4``;
- a legacy completion with ``n=2, best_of=3``;
- an embeddings request of 8 inputs;
- a bad request (truncated JSON, a wrong type, an unknown deployment, 2 MB of garbage, a wrong
  key), which must get its 4xx;
- a request with ``max_tokens`` beyond the context (400).

The server's RSS is sampled every ``--sample`` seconds; after ``--warmup`` seconds the series
should be flat. Reported: RSS at the end of warm-up, at the end, min/max after warm-up, the
least-squares slope after warm-up (MB per 10 minutes), request counts by status, and any 5xx.

    .venv/bin/python bench/soak.py                     # 10 minutes
    .venv/bin/python bench/soak.py --seconds 1800 --clients 12

Results: ``bench/soak_long.results.json``; the summary in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import cerulean_proc

RESULTS = cerulean_proc.REPO / "bench" / "soak_long.results.json"
V = "?api-version=2024-10-21"
CHAT = "/openai/deployments/gpt-35-turbo/chat/completions" + V
LEGACY = "/openai/deployments/gpt-35-turbo/completions" + V
EMBED = "/openai/deployments/text-embedding-ada-002/embeddings" + V


def _log(message: str) -> None:
    print(f">> {message}", flush=True)


def _ask(i: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Tell me about number {i}."}],
        "max_tokens": 24,
        "temperature": 0.7,
    }
    body.update(extra)
    return body


BAD: list[tuple[str, bytes | dict[str, Any], dict[str, str], int]] = [
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"', {}, 400),
    (CHAT, {"messages": "not a list"}, {}, 400),
    ("/openai/deployments/nope/chat/completions" + V, _ask(0), {}, 404),
    (CHAT, b"\x00\xff" * (1024 * 1024), {}, 413),  # 2 MB over --max-body-bytes 1 MiB
    (CHAT, _ask(0), {"api-key": "wrong"}, 401),
    (CHAT, _ask(0, max_tokens=200_000_000), {}, 400),
]


class Tally:
    def __init__(self) -> None:
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.server_errors: list[str] = []
        self.unexpected: list[str] = []

    def saw(self, kind: str, status: int, expected: int = 200) -> None:
        self.by_kind[f"{kind} {status}"] += 1
        if status >= 500:
            self.server_errors.append(f"{kind} {status}")
        elif status != expected:
            self.unexpected.append(f"{kind} {status} (expected {expected})")


async def _stream(client: httpx.AsyncClient, i: int, tally: Tally, *, hang_up: bool) -> None:
    async with client.stream("POST", CHAT, json=_ask(i, stream=True)) as answer:
        kind = "stream-hangup" if hang_up else "stream"
        tally.saw(kind, answer.status_code)
        async for line in answer.aiter_lines():
            if hang_up and '"content"' in line:
                return  # leaving the block closes the connection mid-stream


async def _one(client: httpx.AsyncClient, i: int, tally: Tally) -> None:
    kind = i % 8
    if kind in (0, 1):
        await _stream(client, i, tally, hang_up=kind == 1)
    elif kind == 2:
        tally.saw("chat-n4", (await client.post(CHAT, json=_ask(i, n=4))).status_code)
    elif kind == 3:
        body = {"prompt": f"Once upon a time {i}", "max_tokens": 16, "n": 2, "best_of": 3}
        tally.saw("legacy-best-of", (await client.post(LEGACY, json=body)).status_code)
    elif kind == 4:
        inputs = [f"sentence {i} {j}" for j in range(8)]
        tally.saw("embeddings", (await client.post(EMBED, json={"input": inputs})).status_code)
    else:
        url, body, headers, expected = BAD[i % len(BAD)]
        if isinstance(body, bytes):
            answer = await client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
        else:
            answer = await client.post(url, json=body, headers=headers)
        tally.saw(f"bad-{i % len(BAD)}", answer.status_code, expected)


async def _client(port: int, number: int, until: float, tally: Tally) -> None:
    headers = {"api-key": cerulean_proc.KEY}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300
    ) as client:
        i = number
        while time.monotonic() < until:
            try:
                await _one(client, i, tally)
            except httpx.HTTPError as exc:
                tally.unexpected.append(f"{type(exc).__name__}: {exc}")
            i += 7


async def _sampler(pid: int, until: float, every: float, series: list[dict[str, float]]) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        rss = cerulean_proc.rss_mb(pid)
        if rss is not None:
            series.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss, 1)})
        await asyncio.sleep(every)


def _slope_per_10min(points: list[dict[str, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs = [p["t_s"] for p in points]
    ys = [p["rss_mb"] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 600


async def soak(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    until = time.monotonic() + args.seconds
    tally = Tally()
    series: list[dict[str, float]] = []
    tasks = [_client(port, n, until, tally) for n in range(args.clients)]
    await asyncio.gather(_sampler(pid, until, args.sample, series), *tasks)
    after = [p for p in series if p["t_s"] >= args.warmup]
    warm = after[0]["rss_mb"] if after else None
    slope = _slope_per_10min(after)
    return {
        "seconds": args.seconds,
        "clients": args.clients,
        "warmup_s": args.warmup,
        "rss_start_mb": series[0]["rss_mb"] if series else None,
        "rss_after_warmup_mb": warm,
        "rss_end_mb": series[-1]["rss_mb"] if series else None,
        "rss_min_after_warmup_mb": min(p["rss_mb"] for p in after) if after else None,
        "rss_max_after_warmup_mb": max(p["rss_mb"] for p in after) if after else None,
        "rss_slope_after_warmup_mb_per_10min": None if slope is None else round(slope, 2),
        "requests": dict(sorted(tally.by_kind.items())),
        "requests_total": sum(tally.by_kind.values()),
        "server_errors": tally.server_errors[:50],
        "unexpected": tally.unexpected[:50],
        "series": series,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=120)
    parser.add_argument("--sample", type=float, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cerulean-soak-"))
    log = home.parent / (home.name + ".log")
    limits = {"CERULEAN_MAX_BODY_BYTES": str(1 << 20)}
    process, port = cerulean_proc.start(home, [], log=log, env=limits)
    try:
        result = asyncio.run(soak(port, process.pid, args))
    finally:
        cerulean_proc.stop(process)
    result["server_log_lines"] = len(log.read_text(errors="replace").splitlines())
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("series", "requests")}
    _log(json.dumps(summary))
    _log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
