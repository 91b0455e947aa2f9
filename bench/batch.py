"""Batch throughput and what a batch costs online traffic, on the embedded model.

One run, one `cerulean serve` (the embedded Gemma 3 270M, ``--parallel`` slots):

1. ``online``: the N requests sent as ordinary chat completions at ``--parallel`` concurrency
   (the engine's batch width); completion tokens per second of the whole run.
2. ``idle TTFT``: one streaming client alone, K requests one after another; time to the first
   content token, p50.
3. ``batch``: the same N requests as one batch (``files.create`` → ``batches.create`` → poll
   until ``completed``); completion tokens per second from create to completed, counted from
   the output file.
4. ``batch + online``: the batch again, with the streaming client of (2) sending requests one
   after another while it runs; that client's TTFT p50, and the batch's tokens/s.

Targets (issue 14): batch tokens/s >= 0.95 x online; TTFT during the batch <= 1.5 x idle.

``--rai-policy Cerulean.Off`` runs the deployment without content filtering. With the default
policy, Azure's default streaming mode holds an answer's text until a 100-character segment (or
the end) has passed the filter, so a short answer's "first token" comes with its last one: the
TTFT then measures the whole answer and the filter's evaluations, not only the batch's priority.

    flock /tmp/bench.lock .venv/bin/python bench/batch.py            # 500 lines
    flock /tmp/bench.lock .venv/bin/python bench/batch.py --lines 200

Results: ``bench/batch.results.json``; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import cerulean_proc

RESULTS = cerulean_proc.REPO / "bench" / "batch.results.json"
DEPLOYMENT = "gpt-4o"
CHAT = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
V = "?api-version=2024-10-21"
HEADERS = {"api-key": cerulean_proc.KEY}


def body(i: int, tokens: int) -> dict[str, Any]:
    return {
        "model": DEPLOYMENT,
        "messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
        "max_tokens": tokens,
        "temperature": 0,
    }


async def online(base: str, lines: int, tokens: int, concurrency: int) -> dict[str, float]:
    queue = list(range(lines))
    completion = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal completion
        while queue:
            i = queue.pop()
            answer = await client.post(CHAT, json=body(i, tokens))
            answer.raise_for_status()
            completion += answer.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"seconds": wall, "completion_tokens": completion, "tokens_per_s": completion / wall}


def ttft(base: str, prompt: int) -> float:
    """Seconds to the first content chunk of one streamed answer."""
    wanted = {**body(prompt, 8), "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", base + CHAT, json=wanted, headers=HEADERS, timeout=600) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                return time.perf_counter() - started
    return time.perf_counter() - started


def streaming_client(base: str, stop: threading.Event, out: list[float], first: int) -> None:
    i = first
    while not stop.is_set():
        out.append(ttft(base, i))
        i += 1
        time.sleep(0.2)  # a person reading the answer, not a load generator


def run_batch(base: str, lines: int, tokens: int) -> dict[str, float]:
    content = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/chat/completions",
                "body": body(i, tokens),
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()
    with httpx.Client(base_url=base, headers=HEADERS, timeout=600) as client:
        uploaded = client.post(
            "/openai/files" + V,
            data={"purpose": "batch"},
            files={"file": ("bench.jsonl", content)},
        ).json()
        started = time.perf_counter()
        batch = client.post(
            "/openai/batches" + V,
            json={
                "input_file_id": uploaded["id"],
                "endpoint": "/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        while batch["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.1)
            batch = client.get(f"/openai/batches/{batch['id']}" + V).json()
        wall = time.perf_counter() - started
        assert batch["status"] == "completed", batch
        text = client.get(f"/openai/files/{batch['output_file_id']}/content" + V).text
    rows = [json.loads(row) for row in text.splitlines() if row.strip()]
    assert len({r["custom_id"] for r in rows}) == lines, "each custom_id once"
    completion = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in rows)
    return {"seconds": wall, "completion_tokens": completion, "tokens_per_s": completion / wall}


def assign_policy(home: Path, policy: str) -> None:
    """Give the deployment ``policy`` through the CLI; the server follows within its cache's
    lifetime (5 s), so wait that long."""
    subprocess.run(
        [sys.executable, "-m", "cerulean", "policies", "assign", DEPLOYMENT, policy],
        check=True,
        env={**os.environ, "CERULEAN_HOME": str(home)},
    )
    time.sleep(6)


def _total(parts: list[dict[str, float]]) -> dict[str, float]:
    seconds = sum(p["seconds"] for p in parts)
    tokens = sum(p["completion_tokens"] for p in parts)
    return {"seconds": seconds, "completion_tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the lines are split into rounds of the four phases, so that a shared machine's "
        "changing load falls on every phase alike",
    )
    parser.add_argument("--ttft-samples", type=int, default=5, help="idle TTFT samples a round")
    parser.add_argument(
        "--rai-policy",
        default=None,
        help="the deployment's content-filter policy (default: the built-in default policy; "
        "Cerulean.Off: no filtering)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    per_round = args.lines // args.rounds
    ons, alones, mixeds, idle, during = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        process, port = cerulean_proc.start(
            Path(tmp) / "home",
            ["--parallel", str(args.parallel)],
            env={"CERULEAN_BATCH_POLL_INTERVAL": "0.1"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            if args.rai_policy:
                assign_policy(Path(tmp) / "home", args.rai_policy)
            for i in range(3):  # warm-up
                ttft(base, 10_000 + i)
            for r in range(args.rounds):
                idle += [ttft(base, 20_000 + 100 * r + i) for i in range(args.ttft_samples)]
                ons.append(asyncio.run(online(base, per_round, args.max_tokens, args.parallel)))
                alones.append(run_batch(base, per_round, args.max_tokens))
                stop, sampled = threading.Event(), []
                client = threading.Thread(
                    target=streaming_client, args=(base, stop, sampled, 30_000 + 1000 * r)
                )
                client.start()
                mixeds.append(run_batch(base, per_round, args.max_tokens))
                stop.set()
                client.join()
                during += sampled
                print(
                    f"round {r + 1}: online {ons[-1]['tokens_per_s']:.1f}, batch "
                    f"{alones[-1]['tokens_per_s']:.1f}, batch+client "
                    f"{mixeds[-1]['tokens_per_s']:.1f} tokens/s; TTFT idle "
                    f"{statistics.median(idle) * 1000:.0f} ms, during "
                    f"{statistics.median(sampled) * 1000:.0f} ms",
                    flush=True,
                )
        finally:
            cerulean_proc.stop(process)
    on, alone, mixed = _total(ons), _total(alones), _total(mixeds)
    results = {
        "lines": per_round * args.rounds,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "parallel": args.parallel,
        "rai_policy": args.rai_policy or "Microsoft.DefaultV2 (the default)",
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_end": os.getloadavg(),
        "online": on,
        "batch": alone,
        "batch_with_online_client": mixed,
        "batch_vs_online": alone["tokens_per_s"] / on["tokens_per_s"],
        "ttft_idle_p50_s": statistics.median(idle),
        "ttft_during_batch_p50_s": statistics.median(during),
        "ttft_ratio": statistics.median(during) / statistics.median(idle),
        "rounds_detail": {"online": ons, "batch": alones, "batch_with_online_client": mixeds},
        "ttft_idle_s": idle,
        "ttft_during_batch_s": during,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"online {on['tokens_per_s']:.1f}, batch {alone['tokens_per_s']:.1f} tokens/s: "
        f"batch/online {results['batch_vs_online']:.3f} (target >= 0.95); TTFT idle "
        f"{results['ttft_idle_p50_s'] * 1000:.0f} ms, during the batch "
        f"{results['ttft_during_batch_p50_s'] * 1000:.0f} ms: {results['ttft_ratio']:.2f}x "
        f"(target <= 1.5) -> {args.out.name}"
    )


if __name__ == "__main__":
    main()
