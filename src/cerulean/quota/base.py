"""The rate-limiter interface: Azure's per-deployment limits and one admission decision.

Azure's rules (``shared/reference/azure-openai-wire.md`` §7; decisions in ``docs/quotas.md``):

- a ``Standard`` deployment of capacity ``K`` may use ``K × 1000`` tokens per minute (TPM) and
  ``K × 6`` requests per minute (RPM);
- requests are counted over 10-second windows (RPM / 6 = ``K`` requests per 10 s, which is also
  what ``x-ratelimit-limit-requests`` reports), tokens over the minute;
- a request is charged when it is admitted, with an *estimate*: prompt tokens + ``max_tokens`` (or
  the default reservation) × ``max(n, best_of)`` (:func:`estimate_tokens`).

Windows slide: a request admitted at ``t`` counts until ``t + window``, so no window of that
length, wherever it starts, ever holds more than the limit.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REQUEST_WINDOW_S",
    "TOKEN_WINDOW_S",
    "Decision",
    "LimitKind",
    "Limits",
    "QuotaBackendError",
    "RateLimiter",
    "estimate_tokens",
    "verdict",
]

LimitKind = Literal["token", "call"]

REQUEST_WINDOW_S = 10.0
TOKEN_WINDOW_S = 60.0


class QuotaBackendError(Exception):
    """The shared store behind a limiter (Redis) could not be reached or failed."""


@dataclass(frozen=True)
class Limits:
    """One deployment's limits: ``requests`` per ``request_window`` s, ``tokens`` per
    ``token_window`` s."""

    tokens: int
    requests: int
    token_window: float = TOKEN_WINDOW_S
    request_window: float = REQUEST_WINDOW_S

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.requests < 1:
            raise ValueError("limits must allow at least one token and one request")
        if self.token_window <= 0 or self.request_window <= 0:
            raise ValueError("windows must be positive")

    @classmethod
    def for_capacity(cls, capacity: int) -> Limits:
        """Azure's limits for a ``Standard`` deployment of ``capacity`` (thousands of TPM)."""
        # RPM = capacity × 6, counted per 10 s: capacity × 6 / 6 = capacity requests a window.
        return cls(tokens=capacity * 1000, requests=capacity)


@dataclass(frozen=True)
class Decision:
    """What the limiter decided for one request, and what the ``x-ratelimit-*`` headers say.

    ``remaining_*`` count what is left in the current windows *after* this request (when it was
    admitted). A denied request charged nothing; ``exceeded`` names the limit that binds
    (``"token"`` or ``"call"``, the one with the longer wait) and ``retry_after`` is the number
    of seconds after which the same request would be admitted if nothing else arrived.
    ``retryable`` is false when the estimate alone exceeds the token limit: no wait helps.
    """

    allowed: bool
    limit_requests: int
    limit_tokens: int
    remaining_requests: int
    remaining_tokens: int
    exceeded: LimitKind | None = None
    retry_after: float = 0.0
    retryable: bool = True

    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers every inference response carries (§6)."""
        return {
            "x-ratelimit-limit-requests": str(self.limit_requests),
            "x-ratelimit-limit-tokens": str(self.limit_tokens),
            "x-ratelimit-remaining-requests": str(max(0, self.remaining_requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.remaining_tokens)),
        }


def verdict(
    limits: Limits,
    tokens: int,
    *,
    used_requests: int,
    used_tokens: int,
    call_wait: float,
    token_wait: float,
) -> Decision:
    """The decision for a request of ``tokens``, given what the windows held before it and the
    waits until it would fit (both zero: admitted, and the caller has charged it)."""
    if tokens > limits.tokens:
        exceeded: LimitKind | None = "token"
        retry_after, retryable = limits.token_window, False
    elif call_wait <= 0 and token_wait <= 0:
        return Decision(
            allowed=True,
            limit_requests=limits.requests,
            limit_tokens=limits.tokens,
            remaining_requests=limits.requests - used_requests - 1,
            remaining_tokens=limits.tokens - used_tokens - tokens,
        )
    else:
        exceeded = "token" if token_wait >= call_wait else "call"
        retry_after, retryable = max(call_wait, token_wait), True
    return Decision(
        allowed=False,
        limit_requests=limits.requests,
        limit_tokens=limits.tokens,
        remaining_requests=limits.requests - used_requests,
        remaining_tokens=limits.tokens - used_tokens,
        exceeded=exceeded,
        retry_after=retry_after,
        retryable=retryable,
    )


def estimate_tokens(
    prompt_tokens: int,
    max_tokens: int | None,
    *,
    default_reservation: int,
    n: int | None = 1,
    best_of: int | None = None,
) -> int:
    """Azure's admission estimate: prompt + (``max_tokens`` or reservation) × max(n, best_of)."""
    completion = default_reservation if max_tokens is None else max_tokens
    choices = max(n or 1, best_of or 1)
    return max(0, prompt_tokens) + max(0, completion) * choices


class RateLimiter(abc.ABC):
    """Charges requests against per-deployment limits; the caller passes the clock.

    ``now`` is wall-clock seconds (``time.time()``): the Redis implementation compares stamps
    written by several processes, so they must share an epoch. Implementations are safe to call
    from many tasks and threads at once.
    """

    @abc.abstractmethod
    async def charge(self, deployment: str, limits: Limits, tokens: int, now: float) -> Decision:
        """Admit one request estimated at ``tokens`` (charging both windows) or refuse it."""

    @abc.abstractmethod
    async def add(self, deployment: str, limits: Limits, tokens: int, now: float) -> None:
        """Charge ``tokens`` more to the token window of a request already admitted (its real
        usage beyond its estimate), whatever the window holds: it is spent."""

    @abc.abstractmethod
    async def forget(self, deployment: str) -> None:
        """Drop ``deployment``'s windows (it was deleted; a new one of that name starts fresh)."""

    async def current(self, deployment: str, limits: Limits, now: float) -> tuple[int, int] | None:
        """What ``deployment``'s windows hold now: (requests, tokens); None when this limiter
        cannot tell (the Studio shows the limits alone then)."""
        return None

    async def ping(self) -> None:  # noqa: B027 - in-process limiters are always reachable
        """Check the limiter's shared store (readiness); raises :class:`QuotaBackendError`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most limiters hold nothing
        """Release connections."""
