"""Choosing an upstream: "sticky until saturated", with shared outstanding counts and cooldowns.

A weighted rendezvous hash of the deployment and the prompt's leading text (system message and
first turn) names a *preferred* upstream, so requests that share a prefix land where it is
cached, on every gateway replica alike (the hash needs no shared state). When the preferred one
is clearly busier than the least busy — more than ``spill_abs`` outstanding requests beyond it
and more than ``spill_ratio`` times it — the pick falls back to the power of two choices:
two upstreams drawn by weight, the one with fewer outstanding requests wins. Upstreams in
cooldown or at ``max_concurrency`` are never picked.

Outstanding counts and cooldowns live in a :class:`RoutingState`: in-process, or in Redis so
that several replicas share them. A request is counted when it is picked (not when it starts),
so a burst does not herd onto one upstream; in Redis each in-flight request is a member of a
sorted set scored by its deadline, so a replica killed mid-request cannot leak counts.
"""

from __future__ import annotations

import abc
import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cerulean.quota.outage import OutageLog

__all__ = [
    "InProcessRoutingState",
    "RedisRoutingState",
    "Router",
    "Routable",
    "RoutingState",
    "rendezvous",
]

# A request that holds an outstanding slot longer than this is dropped from the counts (its
# process died): longer than any request's own deadline.
LEASE_S = 900.0


class Routable(Protocol):
    """What the router needs to know of an upstream."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def max_concurrency(self) -> int | None: ...


class RoutingState(abc.ABC):
    """Outstanding requests and cooldowns per upstream; shared by the replicas that share it."""

    @abc.abstractmethod
    async def acquire(self, upstream: str) -> str:
        """Count one more request on ``upstream``; the lease to release."""

    @abc.abstractmethod
    async def release(self, upstream: str, lease: str) -> None:
        """The request holding ``lease`` is over."""

    @abc.abstractmethod
    async def outstanding(self, upstreams: Sequence[str]) -> dict[str, int]:
        """Requests in flight on each upstream."""

    @abc.abstractmethod
    async def cool(self, upstream: str, seconds: float) -> None:
        """Keep ``upstream`` out of routing for ``seconds`` (the longer cooldown wins)."""

    @abc.abstractmethod
    async def clear(self, upstream: str) -> None:
        """End ``upstream``'s cooldown (a health check passed)."""

    @abc.abstractmethod
    async def cooldowns(self, upstreams: Sequence[str]) -> dict[str, float]:
        """Seconds of cooldown left, for the upstreams in cooldown."""

    async def aclose(self) -> None:  # noqa: B027  # optional: only Redis holds connections
        """Release connections."""


@dataclass
class InProcessRoutingState(RoutingState):
    """The state of one process (no Redis configured)."""

    clock: Callable[[], float] = time.monotonic
    _leases: dict[str, set[str]] = field(default_factory=dict)
    _cool: dict[str, float] = field(default_factory=dict)

    async def acquire(self, upstream: str) -> str:
        lease = uuid.uuid4().hex
        self._leases.setdefault(upstream, set()).add(lease)
        return lease

    async def release(self, upstream: str, lease: str) -> None:
        self._leases.get(upstream, set()).discard(lease)

    async def outstanding(self, upstreams: Sequence[str]) -> dict[str, int]:
        return {name: len(self._leases.get(name, ())) for name in upstreams}

    async def cool(self, upstream: str, seconds: float) -> None:
        until = self.clock() + seconds
        self._cool[upstream] = max(until, self._cool.get(upstream, 0.0))

    async def clear(self, upstream: str) -> None:
        self._cool.pop(upstream, None)

    async def cooldowns(self, upstreams: Sequence[str]) -> dict[str, float]:
        now = self.clock()
        return {n: self._cool[n] - now for n in upstreams if self._cool.get(n, 0.0) > now}


class RedisRoutingState(RoutingState):
    """The state in Redis: a sorted set of leases per upstream, a key with a TTL per cooldown."""

    def __init__(self, url: str, *, prefix: str = "cerulean:routing:") -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    @property
    def address(self) -> str:
        """host:port (or the socket path) of the Redis server, for log lines (no password)."""
        where = self._redis.connection_pool.connection_kwargs
        if "path" in where:
            return str(where["path"])
        return f"{where.get('host', '?')}:{where.get('port', '?')}"

    def _leases(self, upstream: str) -> str:
        return f"{self._prefix}out:{upstream}"

    def _cool_key(self, upstream: str) -> str:
        return f"{self._prefix}cool:{upstream}"

    async def acquire(self, upstream: str) -> str:
        lease = uuid.uuid4().hex
        await self._redis.zadd(self._leases(upstream), {lease: time.time() + LEASE_S})
        return lease

    async def release(self, upstream: str, lease: str) -> None:
        await self._redis.zrem(self._leases(upstream), lease)

    async def outstanding(self, upstreams: Sequence[str]) -> dict[str, int]:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in upstreams:
                pipe.zremrangebyscore(self._leases(name), "-inf", now)
                pipe.zcard(self._leases(name))
            replies = await pipe.execute()
        return {name: int(replies[2 * i + 1]) for i, name in enumerate(upstreams)}

    async def cool(self, upstream: str, seconds: float) -> None:
        key = self._cool_key(upstream)
        milliseconds = max(1, int(seconds * 1000))
        current = await self._redis.pttl(key)
        if current is None or current < milliseconds:
            await self._redis.set(key, "1", px=milliseconds)

    async def clear(self, upstream: str) -> None:
        await self._redis.delete(self._cool_key(upstream))

    async def cooldowns(self, upstreams: Sequence[str]) -> dict[str, float]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in upstreams:
                pipe.pttl(self._cool_key(name))
            replies = await pipe.execute()
        return {
            name: reply / 1000
            for name, reply in zip(upstreams, replies, strict=True)
            if reply is not None and reply > 0
        }

    async def aclose(self) -> None:
        await self._redis.aclose()


class FallbackRoutingState(RoutingState):
    """Redis's shared state, and this process's own while Redis is unreachable.

    Routing must not fail because its bookkeeping did: a Redis call that fails is retried once,
    then this process's :class:`InProcessRoutingState` answers (counts and cooldowns of this
    replica only) until Redis answers again. The outage is logged once, summarised while it
    lasts and its end reported (:class:`~cerulean.quota.outage.OutageLog`), never a traceback a
    request. A lease taken locally is released locally.
    """

    _LOCAL = "local:"

    def __init__(self, shared: RoutingState, outage: OutageLog) -> None:
        # Imported here: the redis package pulls in OpenTelemetry's SDK when it is installed,
        # which a server without Redis (or without telemetry) must not pay for.
        from redis.exceptions import RedisError

        self._shared = shared
        self._local = InProcessRoutingState()
        self._outage = outage
        self._failures: tuple[type[BaseException], ...] = (OSError, RedisError)

    async def _call(self, method: str, *args: Any) -> Any:
        for attempt in (1, 2):
            try:
                result = await getattr(self._shared, method)(*args)
            except self._failures as exc:
                if attempt == 2:
                    self._outage.failed(exc)
                    return await getattr(self._local, method)(*args)
                continue
            self._outage.succeeded()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def acquire(self, upstream: str) -> str:
        lease = str(await self._call("acquire", upstream))
        if self._outage.down:  # taken by the fallback
            return self._LOCAL + lease
        return lease

    async def release(self, upstream: str, lease: str) -> None:
        if lease.startswith(self._LOCAL):
            await self._local.release(upstream, lease.removeprefix(self._LOCAL))
        else:
            await self._call("release", upstream, lease)

    async def outstanding(self, upstreams: Sequence[str]) -> dict[str, int]:
        shared: dict[str, int] = await self._call("outstanding", upstreams)
        if self._outage.down:
            return shared
        local = await self._local.outstanding(upstreams)  # leases taken during an outage
        return {name: shared[name] + local[name] for name in upstreams}

    async def cool(self, upstream: str, seconds: float) -> None:
        await self._call("cool", upstream, seconds)

    async def clear(self, upstream: str) -> None:
        await self._local.clear(upstream)
        await self._call("clear", upstream)

    async def cooldowns(self, upstreams: Sequence[str]) -> dict[str, float]:
        found: dict[str, float] = await self._call("cooldowns", upstreams)
        return found

    async def aclose(self) -> None:
        await self._shared.aclose()


def _unit(text: str) -> float:
    """A number in (0, 1) from ``text``, the same in every process."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


def rendezvous(key: str, upstreams: Sequence[Routable]) -> Routable:
    """The upstream that wins ``key``: weighted rendezvous (highest random weight) hashing.

    Each upstream scores ``-weight / ln(u)`` for a ``u`` drawn from the key and its name, so a
    key's winner changes only when its own winner leaves, and an upstream wins a share of keys
    proportional to its weight.
    """
    return max(upstreams, key=lambda u: -u.weight / math.log(_unit(f"{key}\x00{u.name}")))


class Router:
    """Orders a deployment's upstreams for one request: the one to try first, then fallbacks."""

    def __init__(
        self,
        state: RoutingState,
        *,
        spill_abs: int = 4,
        spill_ratio: float = 1.5,
        rng: random.Random | None = None,
        policy: str = "affinity",
    ) -> None:
        self.state = state
        self.spill_abs = spill_abs
        self.spill_ratio = spill_ratio
        self.policy = policy  # "affinity" (sticky until saturated) or "round-robin" (a baseline)
        self._rng = rng or random.Random()  # load balancing, not security
        self._turn = 0

    async def order(self, key: str, upstreams: Sequence[Routable]) -> tuple[list[Routable], float]:
        """The usable upstreams in the order to try them, and the shortest cooldown left among
        the ones left out (0 when none is cooling down)."""
        names = [u.name for u in upstreams]
        cooling = await self.state.cooldowns(names)
        busy = await self.state.outstanding(names)
        usable = [
            u
            for u in upstreams
            if u.name not in cooling
            and (u.max_concurrency is None or busy.get(u.name, 0) < u.max_concurrency)
        ]
        shortest = min(cooling.values(), default=0.0)
        if not usable:
            return [], shortest
        first = self._first(key, usable, busy)
        rest = sorted((u for u in usable if u is not first), key=lambda u: busy.get(u.name, 0))
        return [first, *rest], shortest

    def _first(self, key: str, usable: Sequence[Routable], busy: dict[str, int]) -> Routable:
        if self.policy == "round-robin":
            self._turn += 1
            return sorted(usable, key=lambda u: u.name)[self._turn % len(usable)]
        preferred = rendezvous(key, usable)
        least = min(busy.get(u.name, 0) for u in usable)
        load = busy.get(preferred.name, 0)
        if load - least <= self.spill_abs or load <= self.spill_ratio * least:
            return preferred
        return self._two_choices(usable, busy)

    def _two_choices(self, usable: Sequence[Routable], busy: dict[str, int]) -> Routable:
        weights = [max(u.weight, 1e-6) for u in usable]
        a, b = self._rng.choices(list(usable), weights=weights, k=2)
        return a if busy.get(a.name, 0) <= busy.get(b.name, 0) else b
