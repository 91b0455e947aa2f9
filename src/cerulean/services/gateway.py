"""The upstreams a running server routes to, kept in step with the store.

Deployments backed by upstreams (``cerulean deployments create NAME --upstream A,B``) are served
by a :class:`~cerulean.engines.remote.engine.RemoteEngine` per deployment, built here from the
store's records and rebuilt when they change (re-read at most every :data:`RECORDS_TTL_S`
seconds, so a change made through any replica, the CLI or the ARM API is in force within it).
One :class:`~cerulean.engines.remote.engine.Upstream` per upstream name — one HTTP connection
pool, one failure count — is shared by every deployment that uses it. A background task checks
the health of each upstream in use; a failing one is cooled down (with backoff) and comes back
when its health check passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import httpx
from starlette.concurrency import run_in_threadpool

from cerulean.engines.remote.engine import RemoteEngine, Timeouts, Upstream
from cerulean.engines.remote.routing import (
    FallbackRoutingState,
    InProcessRoutingState,
    RedisRoutingState,
    Router,
    RoutingState,
)
from cerulean.engines.remote.stats import UpstreamStats
from cerulean.engines.remote.transport import UpstreamTransport
from cerulean.errors import ServiceUnavailable
from cerulean.quota.outage import OutageLog
from cerulean.settings import Settings
from cerulean.store.base import DeploymentRecord, Store, UpstreamRecord

__all__ = ["RECORDS_TTL_S", "Gateway", "build_routing_state"]

logger = logging.getLogger(__name__)

RECORDS_TTL_S = 1.0
DEFAULT_CONTEXT = 4096  # reserved for the rate limits when no probe found the context
_HEALTH_TIMEOUT_S = 2.0
_SLOW_CHECKS_TOLERATED = 1  # consecutive health checks that may time out before a cooldown
_ANSWERING_S = 10.0  # an upstream that answered within this long is busy, not down, when slow


def build_routing_state(settings: Settings) -> RoutingState:
    """Redis when ``redis_url`` is set (shared by the replicas), else this process's own."""
    if settings.redis_url:
        shared = RedisRoutingState(settings.redis_url, prefix=settings.routing_redis_prefix)
        outage = OutageLog(
            f"the routing state's Redis at {shared.address}",
            "routed on this replica's own counts",
            logger,
        )
        return FallbackRoutingState(shared, outage)
    return InProcessRoutingState()


class Gateway:
    """Builds and caches the remote engines of upstream-backed deployments."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        state: RoutingState | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._settings = settings
        self.stats = UpstreamStats()
        self.router = Router(
            state or build_routing_state(settings),
            spill_abs=settings.route_spill_abs,
            spill_ratio=settings.route_spill_ratio,
            policy=settings.route_policy,
        )
        self.timeouts = Timeouts(
            connect=settings.upstream_connect_timeout,
            first_byte=settings.upstream_first_byte_timeout,
            read=settings.upstream_read_timeout,
            cooldown=settings.upstream_cooldown,
        )
        self._clock = clock
        self._records: dict[str, UpstreamRecord] = {}
        self._read_at = float("-inf")
        self._upstreams: dict[str, Upstream] = {}
        self._engines: dict[str, tuple[object, RemoteEngine]] = {}

    @property
    def upstreams(self) -> dict[str, Upstream]:
        """The upstreams in use, by name."""
        return dict(self._upstreams)

    async def engine_for(self, deployment: DeploymentRecord) -> RemoteEngine:
        """The engine serving ``deployment`` from its upstreams (503 when none is registered)."""
        records = await self._current_records()
        chosen = [records[name] for name in deployment.upstreams if name in records]
        if not chosen:
            raise ServiceUnavailable(
                f"Deployment {deployment.name} has no registered upstream "
                f"({', '.join(deployment.upstreams)}); see cerulean upstreams list.",
                retry_after=RECORDS_TTL_S,
            )
        key = (deployment.model, tuple(chosen))
        cached = self._engines.get(deployment.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        upstreams = [self._upstream(record) for record in chosen]
        contexts = [_context(record) for record in chosen]
        known = [c for c in contexts if c]
        engine = RemoteEngine(
            deployment.name,
            deployment.model,
            upstreams,
            self.router,
            self.stats,
            timeouts=self.timeouts,
            retries=self._settings.upstream_retries,
            context_length=min(known) if known else DEFAULT_CONTEXT,
        )
        self._engines[deployment.name] = (key, engine)
        return engine

    async def unusable(self, deployment: DeploymentRecord) -> str | None:
        """Why ``deployment`` cannot be served now (readiness), or None: it is usable when at
        least one of its upstreams is registered and not cooling down (a failed request or
        health check cools one; it returns when a check passes). Asking puts its upstreams in
        use, so the health checks cover them from then on."""
        try:
            engine = await self.engine_for(deployment)
        except ServiceUnavailable as exc:
            return exc.message
        names = [u.name for u in engine.upstreams]
        cooling = await self.router.state.cooldowns(names)
        if all(name in cooling for name in names):
            left = min(cooling.values())
            return f"every upstream ({', '.join(names)}) is cooling down ({left:.1f} s left)"
        return None

    async def _current_records(self) -> dict[str, UpstreamRecord]:
        if self._clock() - self._read_at >= RECORDS_TTL_S:
            records = await run_in_threadpool(self._store.list_upstreams)
            self._records = {r.name: r for r in records}
            self._read_at = self._clock()
        return self._records

    def _upstream(self, record: UpstreamRecord) -> Upstream:
        """The shared run-time upstream for ``record`` (a new one when its record changed)."""
        current = self._upstreams.get(record.name)
        if current is not None and current.record == record:
            return current
        if current is not None and current.client is not None:
            client = current.client
            asyncio.get_running_loop().create_task(client.aclose())
        timeouts = self.timeouts
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.read,
                pool=timeouts.first_byte,
            ),
            # Idle connections are dropped before the servers' own keep-alive timeouts (5 s for
            # llama-server, uvicorn and many others; httpx's default is the same 5 s), so a
            # request rarely meets a connection the upstream is closing (a stale-connection race
            # the engine retries once, docs/scaling.md). The bytes move through the gateway's own
            # transport: a third of httpx's CPU per relayed event (engines/remote/transport.py).
            transport=UpstreamTransport(keepalive_expiry=2.0),
        )
        upstream = Upstream(record, client)
        self._upstreams[record.name] = upstream
        return upstream

    # -- health -----------------------------------------------------------------------------------

    async def check(self, upstream: Upstream) -> bool:
        """One health check: the flavor's health route, or its models listing, answers 200."""
        profile = upstream.profile
        if profile.health is not None:
            url = upstream.root + profile.health
        elif profile.dialect == "azure":
            url = f"{upstream.root}/openai/models?api-version=2024-10-21"
        else:
            url = upstream.record.url.rstrip("/") + "/models"
        client = upstream.client
        assert client is not None
        slow = False
        try:
            answer = await client.get(url, headers=upstream.headers(), timeout=_HEALTH_TIMEOUT_S)
            healthy = answer.status_code == 200
        except httpx.TimeoutException:
            healthy, slow = False, True
        except httpx.HTTPError:
            healthy = False
        state = self.router.state
        answering = time.monotonic() - upstream.answered_at < _ANSWERING_S
        if slow and (answering or upstream.health_misses < _SLOW_CHECKS_TOLERATED):
            # An engine busy with a full batch can answer its health route late while every
            # request it serves still streams: a slow check is not an outage while answers
            # still come (one is tolerated when none came lately); a refused or failing check
            # is, and requests' own timeouts cool a stalled upstream at once.
            if not answering:
                upstream.health_misses += 1
            return False
        upstream.health_misses = 0
        if healthy:
            if upstream.failures:
                upstream.failures = 0
                await state.clear(upstream.name)
                logger.info("upstream %s is healthy again", upstream.name)
            return True
        upstream.failures += 1
        wait = min(self.timeouts.cooldown * 2 ** (upstream.failures - 1), 60.0)
        await state.cool(upstream.name, wait)
        self.stats.cooled(upstream.name)
        if upstream.failures == 1:
            logger.warning("upstream %s failed its health check; cooling it down", upstream.name)
        return False

    async def run(self, interval: float) -> None:
        """Check every upstream in use every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            for upstream in list(self._upstreams.values()):
                try:
                    await self.check(upstream)
                except Exception:
                    logger.exception("health check of upstream %s failed", upstream.name)

    async def aclose(self) -> None:
        for upstream in self._upstreams.values():
            if upstream.client is not None:
                with contextlib.suppress(Exception):
                    await upstream.client.aclose()
        self._upstreams.clear()
        self._engines.clear()
        await self.router.state.aclose()


def _context(record: UpstreamRecord) -> int | None:
    if not record.profile:
        return None
    try:
        value = json.loads(record.profile).get("context_length")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None
