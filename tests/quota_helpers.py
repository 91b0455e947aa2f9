"""Helpers the rate-limit tests share."""

from __future__ import annotations

from redis import Redis

from cerulean.quota import Limits


def drop_keys(url: str, prefix: str) -> None:
    with Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def assert_within_budget(admitted: list[tuple[float, int]], limits: Limits) -> None:
    """No window of either length, wherever it starts, holds more than its limit."""
    admitted = sorted(admitted)
    for end, _ in admitted:
        calls = [t for t, _ in admitted if end - limits.request_window < t <= end]
        tokens = sum(n for t, n in admitted if end - limits.token_window < t <= end)
        assert len(calls) <= limits.requests, (end, len(calls))
        assert tokens <= limits.tokens, (end, tokens)
