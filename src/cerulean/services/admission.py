"""Admission to a deployment's rate limits: charge Azure's estimate, or answer Azure's 429.

The estimate (``docs/quotas.md``) is the prompt's tokens plus the answer's budget — the
``max_tokens`` asked for, else what :meth:`~cerulean.engines.base.ModelInfo.completion_budget`
reserves — times ``max(n, best_of)``. The budget is checked before anything is charged, so a
request that cannot fit the model's context is a 400 ``context_length_exceeded``, never a 429.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cerulean.engines.base import ModelInfo
from cerulean.errors import InvalidRequest, RateLimited, ServiceUnavailable
from cerulean.protocol.capabilities import NAMES, Capability
from cerulean.quota.base import Limits, QuotaBackendError, RateLimiter, estimate_tokens
from cerulean.services import accounting
from cerulean.services.deployments import BUILTIN_CAPACITY
from cerulean.store.base import DeploymentRecord

__all__ = ["Quota", "reservation"]

logger = logging.getLogger(__name__)


def reservation(
    info: ModelInfo,
    prompt_tokens: int,
    max_tokens: int | None,
    *,
    choices: int = 1,
    raw: bool = False,
) -> int:
    """Azure's estimate for one prompt: its tokens plus the answer budget for each choice."""
    budget = info.completion_budget(prompt_tokens, max_tokens, raw=raw)
    return estimate_tokens(prompt_tokens, budget, default_reservation=budget, n=choices)


class Quota:
    """Admission for one request: the app's limiter and clock, and the request's api-version."""

    def __init__(
        self,
        limiter: RateLimiter,
        clock: Callable[[], float],
        api_version: str,
        *,
        max_answer_tokens: int | None = None,
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self._api_version = api_version
        self._max_answer_tokens = max_answer_tokens

    def check_answers(self, record: DeploymentRecord, *, choices: int, tokens: int) -> None:
        """Before anything is charged: ``choices`` answers of up to ``tokens`` tokens in all
        (n × max_tokens) beyond ``max_answer_tokens`` on a deployment without a real capacity
        (the built-ins, whose budget bounds nothing) is a 400. A deployment with a capacity
        is bounded by its token budget instead (a 429 that no wait helps)."""
        limit = self._max_answer_tokens
        if limit is None or record.capacity < BUILTIN_CAPACITY or tokens <= limit:
            return
        raise InvalidRequest(
            f"This request asks for up to {tokens} answer tokens ({choices} choices); deployment "
            f"{record.name} allows at most {limit} per request. Lower n (or best_of) or "
            "max_tokens.",
            param="n" if choices > 1 else "max_tokens",
            code="invalid_value",
        )

    async def admit(
        self, record: DeploymentRecord, *, tokens: int, capability: Capability
    ) -> dict[str, str]:
        """Charge ``tokens`` to ``record``'s limits; the ``x-ratelimit-*`` headers for the answer.

        Raises :class:`RateLimited` (429) over a limit, :class:`ServiceUnavailable` (503) when the
        shared limiter's Redis is unreachable (refusing is safer than serving over budget).
        """
        accounting.current().deployment = record.name
        accounting.current().operation = capability
        limits = Limits.for_capacity(record.capacity)
        try:
            decision = await self._limiter.charge(record.name, limits, tokens, self._clock())
        except QuotaBackendError:  # the limiter logs the outage (once, then summaries)
            raise ServiceUnavailable(
                "The rate limiter is unavailable; please retry shortly.", retry_after=1
            ) from None
        if decision.allowed:
            return decision.headers()
        assert decision.exceeded is not None
        error = RateLimited(
            operation=NAMES[capability].operation_id,
            api_version=self._api_version,
            limit=decision.exceeded,
            retry_after=decision.retry_after,
            retryable=decision.retryable,
        )
        error.headers.update(decision.headers())
        accounting.current().rate_limited = True
        raise error

    async def settle(self, record: DeploymentRecord, *, charged: int, used: int) -> None:
        """At the end of a request: charge the real usage beyond the estimate admitted (an
        upstream counts prompts the edge only estimated). Less than the estimate is not given
        back, as on Azure. A Redis outage here loses the overshoot, never the answer."""
        extra = used - charged
        if extra <= 0:
            return
        limits = Limits.for_capacity(record.capacity)
        try:
            await self._limiter.add(record.name, limits, extra, self._clock())
        except QuotaBackendError:  # logged by the limiter as part of its outage
            logger.debug(
                "rate limiter unavailable; %d tokens of %s not charged", extra, record.name
            )
