"""Azure's per-deployment rate limits: the limiter interface, in-process and Redis backends."""

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
    "estimate_tokens",
]
