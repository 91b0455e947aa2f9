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


def build_limiter(redis_url: str | None, *, prefix: str) -> RateLimiter:
    """Redis when ``redis_url`` is set (a budget shared across processes), else in-process."""
    if redis_url:
        # Imported here: the in-process default needs no Redis client.
        from cerulean.quota.redis_limiter import RedisRateLimiter

        return RedisRateLimiter(redis_url, prefix=prefix)
    return InProcessRateLimiter()
