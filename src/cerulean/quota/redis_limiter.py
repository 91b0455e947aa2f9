"""The Redis rate limiter: one budget shared by every Cerulean process pointed at the same Redis.

Each charge is one Lua script, so Redis runs it atomically: expire old entries, check both
windows, admit or compute the wait. Per deployment it keeps three keys under one hash tag (so a
Redis Cluster puts them in one slot), all expiring once their window has passed:

- ``<prefix>{<deployment>}:r`` sorted set of admitted requests, scored by admission time (µs);
- ``<prefix>{<deployment>}:t`` sorted set of ``<id>:<tokens>`` entries, scored the same way;
- ``<prefix>{<deployment>}:n`` the running token total of ``:t``.

Times travel as integer microseconds: exact in Lua's doubles (below 2^53) and free of float
rounding at window edges. The algorithm is :func:`cerulean.quota.memory.decide`'s.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cerulean.quota.base import Decision, Limits, QuotaBackendError, RateLimiter, verdict
from cerulean.quota.memory import InProcessRateLimiter
from cerulean.quota.outage import OutageLog

__all__ = ["RedisRateLimiter"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_CHARGE = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local req_limit = tonumber(ARGV[3])
local req_window = tonumber(ARGV[4])
local tok_limit = tonumber(ARGV[5])
local tok_window = tonumber(ARGV[6])
local id = ARGV[7]
local function us(x) return string.format('%.0f', x) end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', us(now - req_window))
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', us(now - tok_window))
if #expired > 0 then
  for i = 1, #expired do
    total = total - tonumber(string.match(expired[i], ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', us(now - tok_window))
  redis.call('SET', KEYS[3], us(total), 'PX', us(tok_window / 1000 + 1000))
end
local used_req = redis.call('ZCARD', KEYS[1])

if redis.call('ZCARD', KEYS[2]) == 0 then total = 0 end
if cost > tok_limit then
  return {used_req, us(total), '0', '0'}
end

local call_wait = 0
local excess = used_req + 1 - req_limit
if excess > 0 then
  local entry = redis.call('ZRANGE', KEYS[1], excess - 1, excess - 1, 'WITHSCORES')
  call_wait = tonumber(entry[2]) + req_window - now
end

local token_wait = 0
local over = total + cost - tok_limit
if over > 0 then
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local freed = 0
  token_wait = tok_window
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
    if freed >= over then
      token_wait = tonumber(entries[i + 1]) + tok_window - now
      break
    end
  end
end

if call_wait > 0 or token_wait > 0 then
  return {used_req, us(total), us(call_wait), us(token_wait)}
end

redis.call('ZADD', KEYS[1], us(now), id)
redis.call('ZADD', KEYS[2], us(now), id .. ':' .. us(cost))
redis.call('PEXPIRE', KEYS[1], us(req_window / 1000 + 1000))
redis.call('PEXPIRE', KEYS[2], us(tok_window / 1000 + 1000))
redis.call('SET', KEYS[3], us(total + cost), 'PX', us(tok_window / 1000 + 1000))
return {used_req, us(total), '0', '0'}
"""

# A real usage beyond the estimate: spent tokens, added to the token window unconditionally.
_ADD = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local tok_window = tonumber(ARGV[3])
local id = ARGV[4]
local function us(x) return string.format('%.0f', x) end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('ZCARD', KEYS[1]) == 0 then total = 0 end
redis.call('ZADD', KEYS[1], us(now), id .. ':' .. us(cost))
redis.call('PEXPIRE', KEYS[1], us(tok_window / 1000 + 1000))
redis.call('SET', KEYS[2], us(total + cost), 'PX', us(tok_window / 1000 + 1000))
return 1
"""

# What a deployment's windows hold now, read-only (the Studio's deployments page).
_CURRENT = """
local now = tonumber(ARGV[1])
local function us(x) return string.format('%.0f', x) end
local requests = redis.call('ZCOUNT', KEYS[1], '(' .. us(now - tonumber(ARGV[2])), '+inf')
local tokens = 0
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. us(now - tonumber(ARGV[3])), '+inf')
for i = 1, #live do
  tokens = tokens + tonumber(string.match(live[i], ':(%d+)$'))
end
return {requests, us(tokens)}
"""

_US = 1_000_000


class RedisRateLimiter(RateLimiter):
    """Limits kept in Redis, shared by every process using the same ``url`` and ``prefix``.

    **Outages** (docs/operations.md). A command that fails on a broken connection is retried
    once on a fresh one, after dropping the pool's idle connections: after Redis restarts,
    every pooled connection is stale, and without this each failed once (24 of the first 60
    requests got a 503). A retried charge may, rarely, have run before its connection broke:
    that request is then charged twice, never served over budget. While Redis stays
    unreachable, requests are refused with a 503 (``fail_open=False``, the default) or limited
    by this process alone (``fail_open=True``: each replica admits up to the whole budget);
    the outage is logged once, then summarised every 30 s, then its end (:class:`OutageLog`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cerulean:ratelimit:",
        timeout: float = 2.0,
        fail_open: bool = False,
    ) -> None:
        self._client: Redis = Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        self._script = self._client.register_script(_CHARGE)
        self._add = self._client.register_script(_ADD)
        self._current = self._client.register_script(_CURRENT)
        self._prefix = prefix
        # Entry ids only need to be unique among entries alive in one window.
        self._process = secrets.token_hex(6)
        self._counter = itertools.count()
        self._local = InProcessRateLimiter() if fail_open else None
        where = self._client.connection_pool.connection_kwargs
        address = f"{where.get('host', '?')}:{where.get('port', '?')}"
        if "path" in where:
            address = str(where["path"])
        outcome = "limited by this process alone" if fail_open else "refused (503)"
        self.outage = OutageLog(f"the rate limiter's Redis at {address}", outcome, logger)

    @property
    def client(self) -> Redis:
        """The Redis client (for health checks and tools)."""
        return self._client

    def keys(self, deployment: str) -> list[str]:
        """The three keys that hold ``deployment``'s windows."""
        base = f"{self._prefix}{{{deployment}}}"
        return [f"{base}:r", f"{base}:t", f"{base}:n"]

    async def _run(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op`` against Redis, retried once on a fresh connection if its connection broke."""
        try:
            try:
                result = await op()
            except RedisConnectionError:
                await self._client.connection_pool.disconnect(inuse_connections=False)
                result = await op()
        except RedisError as exc:
            self.outage.failed(exc)
            raise QuotaBackendError(f"Redis rate limiter: {exc}") from exc
        self.outage.succeeded()
        return result

    async def charge(self, deployment: str, limits: Limits, tokens: int, now: float) -> Decision:
        args: list[str | int] = [
            round(now * _US),
            max(0, tokens),
            limits.requests,
            round(limits.request_window * _US),
            limits.tokens,
            round(limits.token_window * _US),
            f"{self._process}{next(self._counter)}",
        ]
        keys = self.keys(deployment)
        try:
            reply: list[Any] = await self._run(lambda: self._script(keys=keys, args=args))
        except QuotaBackendError:
            if self._local is None:
                raise
            return await self._local.charge(deployment, limits, tokens, now)
        return _decision(reply, limits, max(0, tokens))

    async def add(self, deployment: str, limits: Limits, tokens: int, now: float) -> None:
        _, window, total = self.keys(deployment)
        args: list[str | int] = [
            round(now * _US),
            max(0, tokens),
            round(limits.token_window * _US),
            f"{self._process}{next(self._counter)}",
        ]
        try:
            await self._run(lambda: self._add(keys=[window, total], args=args))
        except QuotaBackendError:
            if self._local is None:
                raise
            await self._local.add(deployment, limits, tokens, now)

    async def current(self, deployment: str, limits: Limits, now: float) -> tuple[int, int] | None:
        """What the shared windows hold (every process's requests); None while Redis fails."""
        requests, tokens, _ = self.keys(deployment)
        args = [
            round(now * _US),
            round(limits.request_window * _US),
            round(limits.token_window * _US),
        ]
        try:
            reply: list[Any] = await self._run(
                lambda: self._current(keys=[requests, tokens], args=args)
            )
        except QuotaBackendError:
            return None
        return int(reply[0]), int(reply[1])

    async def forget(self, deployment: str) -> None:
        keys = self.keys(deployment)
        await self._run(lambda: self._client.delete(*keys))
        if self._local is not None:
            await self._local.forget(deployment)

    async def ping(self) -> None:
        await self._run(self._client.ping)

    async def aclose(self) -> None:
        await self._client.aclose()


def _decision(reply: list[Any], limits: Limits, tokens: int) -> Decision:
    return verdict(
        limits,
        tokens,
        used_requests=int(reply[0]),
        used_tokens=int(reply[1]),
        call_wait=int(reply[2]) / _US,
        token_wait=int(reply[3]) / _US,
    )
