"""Fairness: a normal request's latency while two n=128, max_tokens=16 requests run.

One run, the same `cerulean serve` (the embedded model, 8 slots) twice, side by side:

- ``unfair``: ``--no-fair-share``, the old behaviour (each big request's waves take all 8 slots,
  first come first served);
- ``fair``: the default (a request's choices start in waves of at most slots / (requests + 1)
  while others run or wait; docs/engine.md).

For each: the latency of a normal request (n=1, max_tokens=16, temperature 0) alone (median of
5), then the two big requests are started and normal requests are sent one after another while
they run: their latency p50/max, and how long the big requests took.

    .venv/bin/python bench/fairness.py          # about 3 minutes on 2 cores

Results: ``bench/fairness.results.json``; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import cerulean_proc

RESULTS = cerulean_proc.REPO / "bench" / "fairness.results.json"
CHAT = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
NORMAL = {
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
    "temperature": 0,
}
BIG = {
    "messages": [{"role": "user", "content": "Name a fruit."}],
    "max_tokens": 16,
    "n": 128,
    "temperature": 1.0,
}


def _log(message: str) -> None:
    print(f">> {message}", flush=True)


async def normal(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    answer = await client.post(CHAT, json=NORMAL)
    assert answer.status_code == 200, answer.text
    return time.perf_counter() - started


async def scenario(port: int, label: str) -> dict[str, Any]:
    headers = {"api-key": cerulean_proc.KEY}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600
    ) as client:
        await normal(client)  # warm-up
        alone = [await normal(client) for _ in range(5)]

        async def big() -> float:
            started = time.perf_counter()
            answer = await client.post(CHAT, json=BIG)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["choices"]) == 128
            return time.perf_counter() - started

        bigs = [asyncio.create_task(big()) for _ in range(2)]
        await asyncio.sleep(0.5)  # both big requests are in the engine
        during: list[float] = []
        while not all(task.done() for task in bigs):
            during.append(await normal(client))
        big_s = [task.result() for task in bigs]
    result = {
        "server": label,
        "normal_alone_p50_s": round(statistics.median(alone), 3),
        "normal_during_p50_s": round(statistics.median(during), 3),
        "normal_during_max_s": round(max(during), 3),
        "normal_during_count": len(during),
        "big_requests_s": [round(s, 1) for s in big_s],
    }
    _log(json.dumps(result))
    return result


def run(home: Path, label: str, args: list[str]) -> dict[str, Any]:
    process, port = cerulean_proc.start(home, ["--no-embeddings", *args])
    try:
        result = asyncio.run(scenario(port, label))
        result["peak_rss_mb"] = cerulean_proc.rss_mb(process.pid)
        return result
    finally:
        cerulean_proc.stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cerulean-fair-"))  # one home: the model assembled once
    results = [run(home, "unfair", ["--no-fair-share"]), run(home, "fair", ["--fair-share"])]
    unfair, fair = results
    ratio = unfair["normal_during_p50_s"] / max(fair["normal_during_p50_s"], 1e-9)
    summary = {"runs": results, "normal_during_p50_unfair_over_fair": round(ratio, 2)}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _log(f"unfair/fair normal-request p50 while the big ones run: {ratio:.2f}x; wrote {RESULTS}")


if __name__ == "__main__":
    main()
