"""Rate-limiter overhead per request: Cerulean's limiters vs the `limits` package, same run.

Each scenario charges requests to one deployment back to back on one event loop and times every
call (``perf_counter_ns`` around the ``await``):

- Cerulean in-process (``InProcessRateLimiter``) and Redis (``RedisRateLimiter``, one Lua call);
- ``limits`` 'moving window' (``limits.aio.strategies.MovingWindowRateLimiter``) on its memory
  and Redis (redis-py) storages, doing the same check: a hit on "requests per 10 s" and, when it
  passes, a hit of ``cost = tokens`` on "tokens per minute".

Scenarios: ``admitted`` (a deployment with room for every request: the common path), ``calls``
(1 token a request: the request window dominates), ``throttled`` (capacity 1: nearly every
request is refused, the 429 path). Both limiters read the real clock here (``limits`` cannot be
given another).

    python bench/limiter.py                 # writes bench/limiter.results.json
    python bench/limiter.py --requests 2000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis import Redis

from cerulean.quota import InProcessRateLimiter, Limits, RateLimiter
from cerulean.quota.redis_limiter import RedisRateLimiter

HERE = Path(__file__).parent
Charge = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Scenario:
    name: str
    capacity: int
    tokens: int


SCENARIOS = (
    # 300 tokens: a 44-token prompt with max_tokens 256. Capacity leaves room for every request.
    Scenario("admitted", capacity=100_000, tokens=300),
    Scenario("calls", capacity=100_000, tokens=1),
    Scenario("throttled", capacity=1, tokens=300),
)


def cerulean(limiter: RateLimiter, scenario: Scenario) -> Charge:
    limits = Limits.for_capacity(scenario.capacity)
    deployment = f"bench-{uuid.uuid4().hex}"

    async def charge() -> bool:
        decision = await limiter.charge(deployment, limits, scenario.tokens, time.time())
        return decision.allowed

    return charge


def competitor(strategy: MovingWindowRateLimiter, scenario: Scenario) -> Charge:
    limits = Limits.for_capacity(scenario.capacity)
    namespace = f"bench-{uuid.uuid4().hex}"
    requests = RateLimitItemPerSecond(limits.requests, 10, namespace=namespace)
    tokens = RateLimitItemPerMinute(limits.tokens, namespace=namespace)

    async def charge() -> bool:
        if not await strategy.hit(requests, "deployment"):
            return False
        return await strategy.hit(tokens, "deployment", cost=scenario.tokens)

    return charge


async def timed(charge: Charge, count: int, samples: list[int]) -> int:
    """Run ``charge`` ``count`` times, appending each call's nanoseconds; the number admitted."""
    admitted = 0
    clock = time.perf_counter_ns
    for _ in range(count):
        started = clock()
        allowed = await charge()
        samples.append(clock() - started)
        admitted += allowed
    return admitted


def summary(samples: list[int], admitted: int) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "admitted": admitted,
        "requests": len(samples),
    }


async def interleaved(
    rows: dict[str, Charge], counts: dict[str, int], warmup: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Measure every row in turns (``rounds`` slices each), so that a load change on the machine
    touches them all alike."""
    samples: dict[str, list[int]] = {name: [] for name in rows}
    admitted = dict.fromkeys(rows, 0)
    for charge in rows.values():
        await timed(charge, warmup, [])
    for _ in range(rounds):
        for name, charge in rows.items():
            admitted[name] += await timed(charge, counts[name] // rounds, samples[name])
    return {name: summary(samples[name], admitted[name]) for name in rows}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"cerulean-bench:{uuid.uuid4().hex}:"
    redis_limiter = RedisRateLimiter(args.redis_url, prefix=prefix)
    memory = MovingWindowRateLimiter(MemoryStorage())
    redis_storage = RedisStorage(
        args.redis_url.replace("redis://", "async+redis://", 1),
        implementation="redispy",
        key_prefix=prefix + "limits",
    )
    shared = MovingWindowRateLimiter(redis_storage)
    ping = redis_limiter.client.ping

    async def round_trip() -> bool:
        return bool(await ping())

    results: dict[str, Any] = {}
    try:
        for scenario in SCENARIOS:
            rows = {
                "cerulean in-process": cerulean(InProcessRateLimiter(), scenario),
                "limits memory": competitor(memory, scenario),
                "cerulean redis": cerulean(redis_limiter, scenario),
                "limits redis": competitor(shared, scenario),
            }
            if scenario is SCENARIOS[0]:
                # The floor of any Redis limiter: one round trip to the server, doing nothing.
                rows["redis PING (floor)"] = round_trip
            counts = {name: args.redis if "redis" in name else args.requests for name in rows}
            figures = await interleaved(rows, counts, args.warmup, args.rounds)
            results[scenario.name] = figures
            for name, row in figures.items():
                print(
                    f"{scenario.name:10} {name:20} p50 {row['p50_us']:8.1f} µs  "
                    f"p99 {row['p99_us']:8.1f} µs  admitted {row['admitted']}/{row['requests']}",
                    flush=True,
                )
    finally:
        await redis_limiter.aclose()
        with Redis.from_url(args.redis_url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
    return results


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario, rows in results.items():
        out[scenario] = {
            kind: {
                f"{stat}_ratio": rows[f"limits {other}"][stat] / rows[f"cerulean {kind}"][stat]
                for stat in ("p50_us", "p99_us")
            }
            for kind, other in (("in-process", "memory"), ("redis", "redis"))
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="charges per in-process run")
    parser.add_argument("--redis", type=int, default=3000, help="charges per Redis run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="turns the runs are cut into")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=HERE / "limiter.results.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = asyncio.run(run(args))
    with Redis.from_url(args.redis_url) as client:
        redis_version = str(client.info("server")["redis_version"])
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}",
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "redis_server": redis_version,
        "libraries": {"limits": version("limits"), "redis": version("redis")},
        "requests": args.requests,
        "redis_requests": args.redis,
        "results": results,
        "limits_over_cerulean": ratios(results),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for scenario, kinds in report["limits_over_cerulean"].items():
        for kind, figures in kinds.items():
            print(
                f"{scenario:10} limits/cerulean {kind:10} p50 ×{figures['p50_us_ratio']:.1f}  "
                f"p99 ×{figures['p99_us_ratio']:.1f}"
            )


if __name__ == "__main__":
    main()
