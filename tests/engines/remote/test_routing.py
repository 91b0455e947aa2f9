"""Routing: rendezvous preference, spilling to the less busy, weights, cooldowns, concurrency;
the in-process and the Redis routing state (the real Redis)."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest

from cerulean.engines.remote.routing import (
    FallbackRoutingState,
    InProcessRoutingState,
    RedisRoutingState,
    Router,
    RoutingState,
    rendezvous,
)
from cerulean.quota.outage import OutageLog


@dataclass(frozen=True)
class U:
    name: str
    weight: float = 1.0
    max_concurrency: int | None = None


THREE = [U("a"), U("b"), U("c")]


def test_a_key_always_prefers_the_same_upstream_and_keys_spread() -> None:
    assert all(rendezvous("k1", THREE) == rendezvous("k1", THREE) for _ in range(10))
    wins = Counter(rendezvous(f"key {i}", THREE).name for i in range(3000))
    assert all(800 < wins[n] < 1200 for n in "abc"), wins


def test_removing_an_upstream_moves_only_its_keys() -> None:
    before = {i: rendezvous(f"k{i}", THREE).name for i in range(2000)}
    after = {i: rendezvous(f"k{i}", THREE[:2]).name for i in range(2000)}
    moved = [i for i in before if before[i] != after[i]]
    assert all(before[i] == "c" for i in moved)


def test_weights_set_the_share_of_keys() -> None:
    weighted = [U("a", 3.0), U("b", 1.0)]
    wins = Counter(rendezvous(f"key {i}", weighted).name for i in range(4000))
    assert 2.4 < wins["a"] / wins["b"] < 3.6, wins


async def _order(router: Router, key: str, ups: list[U]) -> list[str]:
    order, _ = await router.order(key, ups)
    return [u.name for u in order]


def test_sticky_until_saturated() -> None:
    state = InProcessRoutingState()
    router = Router(state, spill_abs=4, spill_ratio=1.5, rng=random.Random(1))
    preferred = rendezvous("chat", THREE).name

    async def scenario() -> None:
        for _ in range(4):  # up to 4 beyond the least busy: stays put
            assert (await _order(router, "chat", THREE))[0] == preferred
            await state.acquire(preferred)
        await state.acquire(preferred)  # now 5 beyond 0: spills to a less busy one
        first = (await _order(router, "chat", THREE))[0]
        assert first != preferred

    asyncio.run(scenario())


def test_cooled_and_full_upstreams_are_left_out() -> None:
    state = InProcessRoutingState()
    router = Router(state)

    async def scenario() -> None:
        await state.cool("a", 30)
        ups = [U("a"), U("b", max_concurrency=1), U("c")]
        await state.acquire("b")
        order, shortest = await router.order("k", ups)
        assert [u.name for u in order] == ["c"] and 29 < shortest <= 30
        await state.cool("c", 5)
        order, shortest = await router.order("k", ups)
        assert order == [] and 4 < shortest <= 5

    asyncio.run(scenario())


@pytest.fixture(params=["memory", "redis"])
def routing_state(request: pytest.FixtureRequest) -> RoutingState:
    if request.param == "memory":
        return InProcessRoutingState()
    url: str = request.getfixturevalue("redis_url")
    return RedisRoutingState(url, prefix=f"cerulean:test:{uuid.uuid4().hex}:")


def test_leases_cooldowns_and_clearing(routing_state: RoutingState) -> None:
    async def scenario() -> None:
        leases = [await routing_state.acquire("a") for _ in range(3)]
        assert await routing_state.outstanding(["a", "b"]) == {"a": 3, "b": 0}
        for lease in leases:
            await routing_state.release("a", lease)
        assert await routing_state.outstanding(["a"]) == {"a": 0}
        await routing_state.cool("a", 0.3)
        await routing_state.cool("a", 0.1)  # the longer cooldown wins
        left = await routing_state.cooldowns(["a", "b"])
        assert set(left) == {"a"} and 0.15 < left["a"] <= 0.3
        await asyncio.sleep(0.35)
        assert await routing_state.cooldowns(["a"]) == {}
        await routing_state.cool("b", 10)
        await routing_state.clear("b")
        assert await routing_state.cooldowns(["b"]) == {}
        await routing_state.aclose()

    asyncio.run(scenario())


def test_two_replicas_share_counts_through_redis(redis_url: str) -> None:
    prefix = f"cerulean:test:{uuid.uuid4().hex}:"

    async def scenario() -> None:
        one, two = (
            RedisRoutingState(redis_url, prefix=prefix),
            RedisRoutingState(redis_url, prefix=prefix),
        )
        lease = await one.acquire("a")
        await one.cool("b", 5)
        assert await two.outstanding(["a"]) == {"a": 1}
        assert set(await two.cooldowns(["a", "b"])) == {"b"}
        await one.release("a", lease)
        assert await two.outstanding(["a"]) == {"a": 0}
        await one.aclose()
        await two.aclose()

    asyncio.run(scenario())


class _Switch(RoutingState):
    """A shared state that fails (as an unreachable Redis does) while ``down`` is set."""

    def __init__(self) -> None:
        self.inner = InProcessRoutingState()
        self.down = False
        self.calls = 0

    def __getattribute__(self, name: str) -> object:
        if name in ("acquire", "release", "outstanding", "cool", "clear", "cooldowns"):
            self.calls += 1
            if self.down:
                raise ConnectionRefusedError("Connection refused")
            return getattr(self.inner, name)
        return object.__getattribute__(self, name)

    async def acquire(self, upstream: str) -> str:  # pragma: no cover - via __getattribute__
        raise NotImplementedError

    async def release(self, upstream: str, lease: str) -> None:  # pragma: no cover
        raise NotImplementedError

    async def outstanding(self, upstreams: object) -> dict[str, int]:  # type: ignore[override]  # pragma: no cover
        raise NotImplementedError

    async def cool(self, upstream: str, seconds: float) -> None:  # pragma: no cover
        raise NotImplementedError

    async def clear(self, upstream: str) -> None:  # pragma: no cover
        raise NotImplementedError

    async def cooldowns(self, upstreams: object) -> dict[str, float]:  # type: ignore[override]  # pragma: no cover
        raise NotImplementedError


def test_a_redis_outage_routes_on_local_counts_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.routing.outage")
    shared = _Switch()
    state = FallbackRoutingState(shared, OutageLog("the routing Redis", "routed locally", log))
    router = Router(state)

    async def scenario() -> None:
        before = await state.acquire("a")
        shared.down = True
        with caplog.at_level(logging.INFO, logger=log.name):
            leases = [await state.acquire("a") for _ in range(3)]
            assert all(lease.startswith("local:") for lease in leases)
            assert await state.outstanding(["a", "b"]) == {"a": 3, "b": 0}  # this replica's own
            await state.cool("b", 5)
            order, _ = await router.order("key", THREE)
            assert [u.name for u in order] and "b" not in [u.name for u in order]
            for lease in leases:
                await state.release("a", lease)
            shared.down = False
            await state.release("a", before)
            assert await state.outstanding(["a"]) == {"a": 0}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
        assert "Traceback" not in caplog.text
        assert any("reachable again" in r.getMessage() for r in caplog.records)

    asyncio.run(scenario())


def test_a_failed_redis_call_is_retried_once_before_falling_back() -> None:
    shared = _Switch()
    log = logging.getLogger("test.routing.retry")
    state = FallbackRoutingState(shared, OutageLog("the routing Redis", "routed locally", log))
    flaky = {"left": 1}
    real = shared.inner.acquire

    async def once_then_ok(upstream: str) -> str:
        if flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionResetError("reset")
        return await real(upstream)

    shared.inner.acquire = once_then_ok  # type: ignore[method-assign]
    lease = asyncio.run(state.acquire("a"))
    assert not lease.startswith("local:")  # the retry reached the shared state
    assert asyncio.run(shared.inner.outstanding(["a"])) == {"a": 1}
