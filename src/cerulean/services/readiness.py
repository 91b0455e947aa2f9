"""Readiness: whether this process can serve requests now, check by check (docs/operations.md).

Liveness (``/livez``) only says the process answers. Readiness (``/readyz``) checks what every
inference request needs: the store (one small query), the rate limiter (Redis answers PING,
when one is configured) and each deployment (its local model loaded, or at least one of its
upstreams registered and not cooling down). Each check runs on every probe (nothing cached),
so a recovered Redis shows as ready on the first probe after it returns; each is bounded by
:data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from cerulean.state import AppState

__all__ = ["CHECKS", "CHECK_TIMEOUT_S", "Readiness", "check_readiness"]

CHECK_TIMEOUT_S = 2.0
CHECKS = ("store", "rate_limiter", "deployments")


@dataclass
class Readiness:
    """Each check's outcome: ``"ok"`` or why it failed; ``deployments`` lists the failing ones."""

    checks: dict[str, str] = field(default_factory=dict)
    deployments: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(outcome == "ok" for outcome in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.checks.items() if outcome != "ok"]

    def body(self) -> dict[str, object]:
        """The JSON body of ``/readyz`` (no secrets: names and reasons only)."""
        body: dict[str, object] = {
            "status": "ready" if self.ready else "unavailable",
            "checks": dict(self.checks),
        }
        if self.deployments:
            body["deployments"] = dict(self.deployments)
        if not self.ready:
            body["error"] = {
                "code": "ServiceUnavailable",
                "message": "Not ready: " + "; ".join(f"{n}: {self.checks[n]}" for n in self.failed),
            }
        return body


async def _bounded(check: Awaitable[str | None]) -> str:
    try:
        reason = await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # a probe reports any failure, it never raises
        first = (str(exc).splitlines() or [""])[0]  # drivers append SQL and URLs below it
        return " ".join(f"{type(exc).__name__}: {first}".split())[:300]
    return "ok" if reason is None else reason


async def _store(state: AppState) -> str | None:
    await run_in_threadpool(state.store.key_digests)
    return None


async def _limiter(state: AppState) -> str | None:
    await state.limiter.ping()
    return None


async def _deployments(state: AppState, failing: dict[str, str]) -> str | None:
    records = await run_in_threadpool(state.store.list_deployments)
    gateway = state.pool.gateway
    for record in records:
        if record.upstreams:
            reason = (
                "this server does not route to upstreams"
                if gateway is None
                else await gateway.unusable(record)
            )
        else:
            reason = state.pool.unusable(record.model)
        if reason is not None:
            failing[record.name] = reason
    if failing:
        return f"{len(failing)} of {len(records)} deployments unusable"
    return None


async def check_readiness(state: AppState, exclude: Collection[str] = ()) -> Readiness:
    """Run every check not in ``exclude`` (names from :data:`CHECKS`)."""
    outcome = Readiness()
    if "store" not in exclude:
        outcome.checks["store"] = await _bounded(_store(state))
    if "rate_limiter" not in exclude:
        outcome.checks["rate_limiter"] = await _bounded(_limiter(state))
    if "deployments" not in exclude:
        outcome.checks["deployments"] = await _bounded(_deployments(state, outcome.deployments))
    return outcome
