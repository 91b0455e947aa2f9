"""What routes call: charge a request to its deployment, or answer Azure's 429.

A route that serves inference takes :data:`QuotaDep` and, once it knows the request's estimate
(:func:`~cerulean.quota.base.estimate_tokens`), calls :meth:`Quota.admit` before generating::

    async def create_chat_completion(..., deployment: DeploymentDep, quota: QuotaDep):
        tokens = estimate_tokens(prompt_tokens, body.max_tokens, default_reservation=cap, n=n)
        headers = await quota.admit(deployment.record, tokens=tokens, operation=CHAT_OPERATION)
        ...  # answer with ``headers`` (the x-ratelimit-* values) on the response

``admit`` raises :class:`~cerulean.errors.RateLimited` (429, carrying the same headers plus
``retry-after``/``retry-after-ms``) when a limit is reached.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends

from cerulean.deps import ApiVersionDep, StateDep
from cerulean.errors import RateLimited, ServiceUnavailable
from cerulean.quota.base import Limits, QuotaBackendError, RateLimiter
from cerulean.quota.memory import InProcessRateLimiter
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord

__all__ = [
    "CHAT_OPERATION",
    "COMPLETIONS_OPERATION",
    "EMBEDDINGS_OPERATION",
    "Quota",
    "QuotaDep",
    "build_limiter",
]

logger = logging.getLogger(__name__)

# Azure's operation ids, as its 429 message names them (§5.3).
CHAT_OPERATION = "ChatCompletions_Create"
COMPLETIONS_OPERATION = "Completions_Create"
EMBEDDINGS_OPERATION = "Embeddings_Create"


def build_limiter(settings: Settings) -> RateLimiter:
    """Redis when ``redis_url`` is set (a budget shared across processes), else in-process."""
    if settings.redis_url:
        # Imported here: the in-process default needs no Redis client.
        from cerulean.quota.redis_limiter import RedisRateLimiter

        return RedisRateLimiter(settings.redis_url, prefix=settings.redis_prefix)
    return InProcessRateLimiter()


class Quota:
    """Admission for one request: its app's limiter and clock, and its ``api-version``."""

    def __init__(self, state: AppState, api_version: str) -> None:
        self._state = state
        self._api_version = api_version

    async def admit(
        self, record: DeploymentRecord, *, tokens: int, operation: str
    ) -> dict[str, str]:
        """Charge ``tokens`` to ``record``'s limits; the ``x-ratelimit-*`` headers for the answer.

        Raises :class:`RateLimited` (429) over a limit, :class:`ServiceUnavailable` (503) when the
        shared limiter's Redis is unreachable (refusing is safer than serving over budget).
        """
        limits = Limits.for_capacity(record.capacity)
        try:
            decision = await self._state.limiter.charge(
                record.name, limits, tokens, self._state.clock()
            )
        except QuotaBackendError:
            logger.warning("rate limiter unavailable; refusing %s", record.name, exc_info=True)
            raise ServiceUnavailable(retry_after=1) from None
        if decision.allowed:
            return decision.headers()
        assert decision.exceeded is not None
        error = RateLimited(
            operation=operation,
            api_version=self._api_version,
            limit=decision.exceeded,
            retry_after=decision.retry_after,
            retryable=decision.retryable,
        )
        error.headers.update(decision.headers())
        raise error


def get_quota(state: StateDep, version: ApiVersionDep) -> Quota:
    return Quota(state, version.text)


QuotaDep = Annotated[Quota, Depends(get_quota)]
