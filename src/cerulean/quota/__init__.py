"""Azure's per-deployment rate limits: the limiter interface, in-process and Redis backends.

Pure: nothing here knows HTTP or the app; :mod:`cerulean.services.admission` charges requests.
"""

from __future__ import annotations

from cerulean.quota.base import (
    Decision,
    Limits,
    QuotaBackendError,
    RateLimiter,
    estimate_tokens,
)
from cerulean.quota.memory import InProcessRateLimiter

__all__ = [
    "Decision",
    "InProcessRateLimiter",
    "Limits",
    "QuotaBackendError",
    "RateLimiter",
    "build_limiter",
    "estimate_tokens",
]


def build_limiter(
    redis_url: str | None, *, prefix: str, timeout: float = 2.0, fail_open: bool = False
) -> RateLimiter:
    """Redis when ``redis_url`` is set (a budget shared across processes), else in-process;
    ``fail_open``: what a Redis outage does (see :class:`~.redis_limiter.RedisRateLimiter`)."""
    if redis_url:
        # Imported here: the in-process default needs no Redis client.
        from cerulean.quota.redis_limiter import RedisRateLimiter

        return RedisRateLimiter(redis_url, prefix=prefix, timeout=timeout, fail_open=fail_open)
    return InProcessRateLimiter()
