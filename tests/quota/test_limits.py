"""The rate limiters, by walking timestamps (no sleeps): in-process and against the real Redis."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from cerulean.quota import Decision, InProcessRateLimiter, Limits, RateLimiter, estimate_tokens
from cerulean.quota.redis_limiter import RedisRateLimiter
from tests.quota_helpers import assert_within_budget, drop_keys

CAP1 = Limits.for_capacity(1)  # 1,000 tokens a minute, 1 request per 10 s
CAP2 = Limits.for_capacity(2)


@dataclass
class Driver:
    """Drives one limiter from synchronous tests, on an event loop of its own."""

    limiter: RateLimiter
    loop: asyncio.AbstractEventLoop

    def charge(
        self, now: float, tokens: int, limits: Limits = CAP1, deployment: str = "dep"
    ) -> Decision:
        return self.loop.run_until_complete(self.limiter.charge(deployment, limits, tokens, now))

    def gather(self, calls: list[tuple[str, Limits, int, float]]) -> list[Decision]:
        """Run ``calls`` (deployment, limits, tokens, now) concurrently."""

        async def all_at_once() -> list[Decision]:
            return list(await asyncio.gather(*(self.limiter.charge(*call) for call in calls)))

        return self.loop.run_until_complete(all_at_once())


@pytest.fixture(params=["memory", "redis"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    loop = asyncio.new_event_loop()
    limiter: RateLimiter
    prefix = f"cerulean-test:{uuid.uuid4().hex}:"
    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        limiter = RedisRateLimiter(url, prefix=prefix)
    else:
        limiter = InProcessRateLimiter()
    try:
        yield Driver(limiter, loop)
    finally:
        loop.run_until_complete(limiter.aclose())
        loop.close()
        if url:
            drop_keys(url, prefix)


def test_limits_for_capacity() -> None:
    assert Limits.for_capacity(120) == Limits(tokens=120_000, requests=120)
    assert (CAP1.tokens, CAP1.requests, CAP1.token_window, CAP1.request_window) == (
        1000,
        1,
        60.0,
        10.0,
    )
    with pytest.raises(ValueError, match="at least one"):
        Limits.for_capacity(0)


def test_estimate_is_prompt_plus_reservation_times_choices() -> None:
    assert estimate_tokens(40, 100, default_reservation=4000) == 140
    assert estimate_tokens(40, None, default_reservation=256) == 296
    assert estimate_tokens(40, 100, default_reservation=256, n=3) == 340
    assert estimate_tokens(40, 100, default_reservation=256, n=2, best_of=5) == 540
    assert estimate_tokens(40, 100, default_reservation=256, n=None, best_of=None) == 140


def test_request_window_boundaries(driver: Driver) -> None:
    first = driver.charge(100.0, 10, CAP2)
    assert first.allowed and first.remaining_requests == 1 and first.remaining_tokens == 1990
    assert driver.charge(100.5, 10, CAP2).allowed
    refused = driver.charge(101.0, 10, CAP2)
    assert not refused.allowed and refused.exceeded == "call"
    assert refused.retry_after == pytest.approx(9.0)
    assert refused.remaining_requests == 0 and refused.remaining_tokens == 1980
    late = driver.charge(109.999, 10, CAP2)
    assert not late.allowed and late.retry_after == pytest.approx(0.001)
    # A window is (now - 10 s, now]: the stamp from 100.0 has left it at 110.0 exactly.
    assert driver.charge(110.0, 10, CAP2).allowed
    assert not driver.charge(110.2, 10, CAP2).allowed
    assert driver.charge(110.5, 10, CAP2).allowed


def test_token_limit_and_retry_after(driver: Driver) -> None:
    assert driver.charge(0.0, 600).remaining_tokens == 400
    assert driver.charge(10.0, 300).remaining_tokens == 100
    refused = driver.charge(20.0, 200)
    assert not refused.allowed and refused.exceeded == "token"
    # 900 + 200 > 1000 until the 600 from t=0 leaves the minute, at t=60.
    assert refused.retry_after == pytest.approx(40.0)
    assert refused.remaining_tokens == 100 and refused.remaining_requests == 1
    assert not driver.charge(59.999, 200).allowed
    admitted = driver.charge(60.0, 200)
    assert admitted.allowed and admitted.remaining_tokens == 500


def test_retry_after_waits_for_enough_expiries(driver: Driver) -> None:
    roomy = Limits(tokens=1000, requests=100)
    for second, tokens in ((0.0, 200), (1.0, 300), (2.0, 400)):
        assert driver.charge(second, tokens, roomy).allowed
    # 900 used; 700 more needs 600 freed: the entries from t=0 and t=1 (500) are not enough.
    refused = driver.charge(3.0, 700, roomy)
    assert refused.retry_after == pytest.approx(59.0)
    assert not driver.charge(61.5, 700, roomy).allowed
    assert driver.charge(62.0, 700, roomy).allowed


def test_the_longer_wait_names_the_limit(driver: Driver) -> None:
    assert driver.charge(0.0, 900).allowed
    both = driver.charge(5.0, 500)
    # Calls free up at t=10, tokens at t=60: the token limit binds.
    assert both.exceeded == "token" and both.retry_after == pytest.approx(55.0)
    calls = driver.charge(5.0, 50)
    assert calls.exceeded == "call" and calls.retry_after == pytest.approx(5.0)


def test_refusals_charge_nothing(driver: Driver) -> None:
    assert driver.charge(0.0, 100).allowed
    for step in range(1, 50):
        assert not driver.charge(step / 10, 100).allowed
    after = driver.charge(10.0, 100)
    assert after.allowed and after.remaining_tokens == 800


def test_headers_report_the_windows(driver: Driver) -> None:
    headers = driver.charge(0.0, 250, CAP2).headers()
    assert headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-limit-tokens": "2000",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-remaining-tokens": "1750",
    }


def test_oversized_request_is_refused_for_good(driver: Driver) -> None:
    refused = driver.charge(0.0, 1001)
    assert not refused.allowed and refused.exceeded == "token" and not refused.retryable
    assert refused.retry_after == 60.0 and refused.remaining_tokens == 1000
    # Exactly the whole minute's budget fits an empty window.
    whole = driver.charge(0.0, 1000)
    assert whole.allowed and whole.remaining_tokens == 0


def test_deployments_are_independent(driver: Driver) -> None:
    assert driver.charge(0.0, 1000, deployment="a").allowed
    assert not driver.charge(1.0, 1, deployment="a").allowed
    assert driver.charge(1.0, 1000, deployment="b").allowed


def test_forgetting_a_deployment_starts_it_afresh(driver: Driver) -> None:
    assert driver.charge(0.0, 1000).allowed
    assert not driver.charge(1.0, 1000).allowed
    driver.loop.run_until_complete(driver.limiter.forget("dep"))
    assert driver.charge(1.0, 1000).allowed


def test_capacity_change_applies_at_once(driver: Driver) -> None:
    assert driver.charge(0.0, 10, CAP2).allowed
    assert driver.charge(1.0, 10, CAP2).allowed
    # Lowered to 1 request per 10 s: both stamps must leave before one more fits.
    lowered = driver.charge(2.0, 10, CAP1)
    assert lowered.exceeded == "call" and lowered.retry_after == pytest.approx(9.0)
    assert (
        lowered.remaining_requests == -1
        and lowered.headers()["x-ratelimit-remaining-requests"] == "0"
    )
    assert driver.charge(11.0, 10, CAP1).allowed


def test_parallel_charges_never_exceed_the_budget(driver: Driver) -> None:
    """Each step fires 24 charges at the same instant, in parallel; then the clock moves on."""
    limits = Limits(tokens=20000, requests=12)
    rng = random.Random(5)
    admitted: list[tuple[float, int]] = []
    refused: set[str | None] = set()
    pool = ThreadPoolExecutor(8) if isinstance(driver.limiter, InProcessRateLimiter) else None
    lock = threading.Lock()
    for step in range(90):
        now = step * 1.5
        sizes = [rng.randint(50, 900) for _ in range(24)]
        if pool is not None:
            assert isinstance(driver.limiter, InProcessRateLimiter)
            charge = functools.partial(driver.limiter.charge_now, "dep", limits, now=now)
            results = list(pool.map(charge, sizes))
        else:
            results = driver.gather([("dep", limits, size, now) for size in sizes])
        with lock:
            for size, decision in zip(sizes, results, strict=True):
                if decision.allowed:
                    admitted.append((now, size))
                else:
                    refused.add(decision.exceeded)
    if pool is not None:
        pool.shutdown()
    assert refused == {"call", "token"} and len(admitted) > 50
    assert_within_budget(admitted, limits)


def test_current_reports_what_the_windows_hold() -> None:
    from cerulean.quota.base import Limits
    from cerulean.quota.memory import InProcessRateLimiter

    limiter = InProcessRateLimiter()
    limits = Limits.for_capacity(2)

    def current(now: float) -> tuple[int, int] | None:
        return asyncio.run(limiter.current("d", limits, now))

    assert current(100.0) == (0, 0)
    limiter.charge_now("d", limits, 30, 100.0)
    assert current(101.0) == (1, 30)
    assert current(111.0) == (0, 30)  # the 10 s request window slid
    assert current(161.0) == (0, 0)
