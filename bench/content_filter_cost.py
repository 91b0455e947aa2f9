"""What content filtering costs: completion tokens/s at 8 concurrent streaming clients on the
default policy (Microsoft.DefaultV2: the harm classifier on prompt and completion, the prompt
shield) against the same model with filtering off (the built-in ``Cerulean.Off`` policy), in
the same server and the same run.

One server of this checkout with the embedded model; ``gpt-35-turbo`` keeps the default
policy and a second deployment ``unfiltered`` of the same model (the same engine, the same
slots) names ``Cerulean.Off``, a third ``async`` the default policy in mode
``Asynchronous_filter``. Rounds alternate the three (``--rounds`` each), so
drift on a shared machine hits both; each round is ``--clients`` clients sending
``--requests`` streamed chat completions one after another (temperature 0, ``--max-tokens``).

``--load serving`` (the default) sends the serving bench's concurrency load to the serving
bench's model (bench/serving.py: the embedded GGUF with Gemma's chat template, its short system
prompt and a distinct question per request, answers that run to ``--max-tokens`` 64), the load
the issue names; ``--load list`` asks for lists, which this small
model ends after about 20 tokens: the worst case, where each answer's fixed checks (the prompt,
the last segment) weigh most.

    flock /tmp/bench.lock .venv/bin/python bench/content_filter_cost.py [--rounds 3] [--load list]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from openai import AsyncAzureOpenAI

import serving  # type: ignore[import-not-found]
from cerulean_proc import KEY, start, stop  # type: ignore[import-not-found]

ADMIN = "bench-admin-token-0123456789abcdef"
ARM = "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/cerulean"
# Long answers (the small model stops early on "write a story"): a list keeps it going.
PROMPT = "List sixty different things you might find in {}, one per line, numbered."
DEFAULT = "Microsoft.DefaultV2"
ARMS = (
    ("default policy", "gpt-35-turbo"),
    ("filtering off", "unfiltered"),
    ("default policy, asynchronous", "async"),
)
TOPICS = [
    "the sea",
    "a mountain",
    "a library",
    "the moon",
    "a garden",
    "a train",
    "winter",
    "bread",
]


def messages(load: str, client: int, request: int, n: int) -> list[dict[str, str]]:
    if load == "serving":  # a distinct question each time, as bench/serving.py sends them
        return serving.chat(serving.SHORT_SYSTEM, (client * n + request) * 7 + 8)
    return [{"role": "user", "content": PROMPT.format(TOPICS[(client + request) % len(TOPICS)])}]


async def one_client(
    client: AsyncAzureOpenAI, deployment: str, n: int, i: int, max_tokens: int, load: str
) -> tuple[int, list[float]]:
    tokens, ttfts = 0, []
    for r in range(n):
        started = time.monotonic()
        first = None
        stream = await client.chat.completions.create(
            model=deployment,
            messages=messages(load, i, r, n),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
            if chunk.usage is not None:
                tokens += chunk.usage.completion_tokens
        ttfts.append(first if first is not None else time.monotonic() - started)
    return tokens, ttfts


async def one_round(
    port: int, deployment: str, clients: int, n: int, max_tokens: int, load: str = "list"
) -> dict[str, float]:
    client = AsyncAzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{port}/",
        api_key=KEY,
        api_version="2024-10-21",
        max_retries=0,
        timeout=600,
    )
    started = time.monotonic()
    results = await asyncio.gather(
        *(one_client(client, deployment, n, i, max_tokens, load) for i in range(clients))
    )
    wall = time.monotonic() - started
    tokens = sum(t for t, _ in results)
    ttfts = [x for _, ts in results for x in ts]
    await client.close()
    return {
        "tokens": tokens,
        "wall": wall,
        "tps": tokens / wall,
        "ttft_p50": statistics.median(ttfts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=None, help="default: 64 (serving), 96")
    parser.add_argument("--load", choices=("serving", "list"), default="serving")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("content_filter_cost.results.json")
    )
    args = parser.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 64 if args.load == "serving" else 96
    home = Path(tempfile.mkdtemp()) / "home"
    served: list[str] = []
    if args.load == "serving":  # the serving bench's GGUF: the same weights, Gemma's template
        model = serving.with_gemma_template(serving.embedded_model_path(), serving.REPO / ".bench")
        served = ["--model", str(model)]
    process, port = start(home, served, env={"CERULEAN_ADMIN_TOKEN": ADMIN})
    try:
        base = f"http://127.0.0.1:{port}{ARM}"
        auth = {"authorization": f"Bearer {ADMIN}"}
        deployment = httpx.get(
            f"{base}/deployments/gpt-35-turbo?api-version=2024-10-01", headers=auth
        ).json()
        async_policy = {"properties": {"mode": "Asynchronous_filter", "basePolicyName": DEFAULT}}
        httpx.put(
            f"{base}/raiPolicies/async-default?api-version=2024-10-01",
            headers=auth,
            json=async_policy,
        ).raise_for_status()
        for name, policy in (("unfiltered", "Cerulean.Off"), ("async", "async-default")):
            body = {
                "sku": {**deployment["sku"], "capacity": 1000},
                "properties": {
                    "model": deployment["properties"]["model"],
                    "raiPolicyName": policy,
                },
            }
            httpx.put(
                f"{base}/deployments/{name}?api-version=2024-10-01",
                headers=auth,
                json=body,
                timeout=120,
            ).raise_for_status()
        deployment["sku"]["capacity"] = 1000  # rate limits out of the way
        httpx.put(
            f"{base}/deployments/gpt-35-turbo?api-version=2024-10-01",
            headers=auth,
            json=deployment,
            timeout=120,
        ).raise_for_status()
        asyncio.run(one_round(port, "gpt-35-turbo", 2, 1, 16))  # warm up both paths
        asyncio.run(one_round(port, "unfiltered", 2, 1, 16))
        asyncio.run(one_round(port, "async", 2, 1, 16))
        rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _ in ARMS}
        for _ in range(args.rounds):
            for label, name in ARMS:
                result = asyncio.run(
                    one_round(port, name, args.clients, args.requests, args.max_tokens, args.load)
                )
                rounds[label].append(result)
                print(
                    f"{label:15} {result['tps']:7.1f} tok/s  ttft p50 {result['ttft_p50']:.2f}s"
                    f"  ({result['tokens']} tokens, {result['wall']:.1f}s)",
                    flush=True,
                )
    finally:
        stop(process)
    summary = {
        label: {
            "tps": sum(r["tokens"] for r in rs) / sum(r["wall"] for r in rs),
            "ttft_p50": statistics.median(r["ttft_p50"] for r in rs),
        }
        for label, rs in rounds.items()
    }
    ratio = summary["default policy"]["tps"] / summary["filtering off"]["tps"]
    print(f"\n| policy | tokens/s ({args.clients} clients) | TTFT p50 |\n|---|---|---|")
    for label, s in summary.items():
        print(f"| {label} | {s['tps']:.1f} | {s['ttft_p50']:.2f} s |")
    print(f"\ncost of filtering: {100 * (1 - ratio):.1f}% of tokens/s (ratio {ratio:.3f})")
    ratio_async = summary["default policy, asynchronous"]["tps"] / summary["filtering off"]["tps"]
    print(f"asynchronous mode: {100 * (1 - ratio_async):.1f}% (ratio {ratio_async:.3f})")
    args.out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"out": str(args.out)},
                "rounds": rounds,
                "summary": summary,
                "ratio": ratio,
                "ratio_async": ratio_async,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
