"""The Redis limiter's own concerns: expiring keys, a budget shared by two processes, outages."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest
from redis import Redis

from cerulean.quota import Limits, QuotaBackendError
from cerulean.quota.redis_limiter import RedisRateLimiter
from tests.quota_helpers import assert_within_budget, drop_keys

SHARED = Limits(tokens=3000, requests=6, token_window=6.0, request_window=1.0)
STEPS = 160
STEP_S = 0.1


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"cerulean-test:{uuid.uuid4().hex}:"
    yield prefix
    drop_keys(redis_url, prefix)


def test_keys_expire_after_their_window(redis_url: str, prefix: str) -> None:
    async def charge() -> list[str]:
        limiter = RedisRateLimiter(redis_url, prefix=prefix)
        try:
            assert (await limiter.charge("dep", Limits.for_capacity(1), 10, 1000.0)).allowed
            return limiter.keys("dep")
        finally:
            await limiter.aclose()

    keys = asyncio.run(charge())
    with Redis.from_url(redis_url) as client:
        ttls = [client.pttl(key) for key in keys]
    requests_ttl, tokens_ttl, total_ttl = ttls
    assert 0 < requests_ttl <= 11_000
    assert 10_000 < tokens_ttl <= 61_000 and 10_000 < total_ttl <= 61_000
    assert all(key.startswith(f"{prefix}{{dep}}:") for key in keys)


def test_unreachable_redis_is_a_backend_error() -> None:
    async def charge() -> None:
        limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
        try:
            await limiter.charge("dep", Limits.for_capacity(1), 10, 0.0)
        finally:
            await limiter.aclose()

    with pytest.raises(QuotaBackendError, match="Redis rate limiter"):
        asyncio.run(charge())


def _worker(
    url: str, prefix: str, seed: int, barrier: Barrier, out: multiprocessing.Queue[object]
) -> None:
    """One process: at every step, wait for the other, then fire 4 charges at once."""

    async def run() -> list[tuple[float, int]]:
        limiter = RedisRateLimiter(url, prefix=prefix)
        admitted: list[tuple[float, int]] = []
        try:
            for step in range(STEPS):
                now = 5000.0 + step * STEP_S
                sizes = [100 + (seed * 7919 + step * 31 + i * 131) % 400 for i in range(4)]
                await asyncio.to_thread(barrier.wait)
                results = await asyncio.gather(
                    *(limiter.charge("shared", SHARED, size, now) for size in sizes)
                )
                admitted += [(now, n) for n, d in zip(sizes, results, strict=True) if d.allowed]
        finally:
            await limiter.aclose()
        return admitted

    out.put((seed, asyncio.run(run())))


def test_two_processes_share_one_budget(redis_url: str, prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    out: multiprocessing.Queue[object] = context.Queue()
    processes = [
        context.Process(target=_worker, args=(redis_url, prefix, seed, barrier, out))
        for seed in (1, 2)
    ]
    for process in processes:
        process.start()
    results = dict(out.get(timeout=120) for _ in processes)  # type: ignore[misc]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    first, second = results[1], results[2]
    assert first and second, "each process got some of the budget"
    admitted = first + second
    # 8 charges a step, 6 requests a second allowed: most are refused, none slip through.
    assert len(admitted) < STEPS * 8 / 2
    assert_within_budget(admitted, SHARED)
    # The budget is used, not just guarded: 16 s span three 6-second token windows.
    assert sum(n for _, n in admitted) >= 2 * SHARED.tokens


def test_current_reads_the_shared_windows(redis_url: str, prefix: str) -> None:
    limits = Limits.for_capacity(2)

    async def run() -> list[tuple[int, int] | None]:
        limiter = RedisRateLimiter(redis_url, prefix=prefix)
        try:
            seen = [await limiter.current("dep", limits, 1000.0)]
            await limiter.charge("dep", limits, 30, 1000.0)
            await limiter.charge("dep", limits, 12, 1001.0)
            seen.append(await limiter.current("dep", limits, 1002.0))
            seen.append(await limiter.current("dep", limits, 1010.5))  # the first left 10 s
            seen.append(await limiter.current("dep", limits, 1061.5))  # both left the minute
            return seen
        finally:
            await limiter.aclose()

    assert asyncio.run(run()) == [(0, 0), (2, 42), (1, 42), (0, 0)]
