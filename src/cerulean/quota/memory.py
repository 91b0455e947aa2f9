"""The in-process rate limiter (the default): sliding logs per deployment, behind one lock.

Hand-written rather than taken from a library: Azure charges a *variable* number of tokens per
request and the 429 must say exactly when the request would pass; ``limits``' moving window stores
one entry per unit of cost (a 4,000-token request is 4,000 entries) and reports no wait for a
given cost. Here each admitted request is one entry in each window, with a running token total.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from cerulean.quota.base import Decision, Limits, RateLimiter, verdict

__all__ = ["InProcessRateLimiter"]


@dataclass
class _Windows:
    """Admission stamps of one deployment: requests (stamp) and tokens (stamp, tokens)."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_total: int = 0

    def expire(self, limits: Limits, now: float) -> None:
        """Drop entries that left their window; a window is ``(now - length, now]``."""
        request_cutoff = now - limits.request_window
        while self.requests and self.requests[0] <= request_cutoff:
            self.requests.popleft()
        token_cutoff = now - limits.token_window
        while self.tokens and self.tokens[0][0] <= token_cutoff:
            self.token_total -= self.tokens.popleft()[1]

    def call_wait(self, limits: Limits, now: float) -> float:
        """Seconds until one more request fits the request window."""
        excess = len(self.requests) + 1 - limits.requests
        if excess <= 0:
            return 0.0
        # The excess-th oldest stamp must leave the window.
        return self.requests[excess - 1] + limits.request_window - now

    def token_wait(self, limits: Limits, tokens: int, now: float) -> float:
        """Seconds until ``tokens`` more fit the token window (``tokens`` <= the limit)."""
        excess = self.token_total + tokens - limits.tokens
        if excess <= 0:
            return 0.0
        freed = 0
        for stamp, charged in self.tokens:
            freed += charged
            if freed >= excess:
                return stamp + limits.token_window - now
        return limits.token_window  # unreachable while tokens <= limits.tokens

    def admit(self, tokens: int, now: float) -> None:
        self.requests.append(now)
        self.tokens.append((now, tokens))
        self.token_total += tokens


def decide(windows: _Windows, limits: Limits, tokens: int, now: float) -> Decision:
    """Charge ``windows`` for one request if both limits allow it (the caller holds the lock)."""
    windows.expire(limits, now)
    used_requests, used_tokens = len(windows.requests), windows.token_total
    fits = tokens <= limits.tokens
    call_wait = windows.call_wait(limits, now) if fits else 0.0
    token_wait = windows.token_wait(limits, tokens, now) if fits else 0.0
    decision = verdict(
        limits,
        tokens,
        used_requests=used_requests,
        used_tokens=used_tokens,
        call_wait=call_wait,
        token_wait=token_wait,
    )
    if decision.allowed:
        windows.admit(tokens, now)
    return decision


class InProcessRateLimiter(RateLimiter):
    """Limits shared by the tasks and threads of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Windows] = {}

    async def charge(self, deployment: str, limits: Limits, tokens: int, now: float) -> Decision:
        return self.charge_now(deployment, limits, tokens, now)

    def charge_now(self, deployment: str, limits: Limits, tokens: int, now: float) -> Decision:
        """:meth:`charge` without an event loop (it never waits: one short critical section)."""
        with self._lock:
            windows = self._windows.get(deployment)
            if windows is None:
                windows = self._windows[deployment] = _Windows()
            return decide(windows, limits, tokens, now)

    async def add(self, deployment: str, limits: Limits, tokens: int, now: float) -> None:
        with self._lock:
            windows = self._windows.setdefault(deployment, _Windows())
            windows.expire(limits, now)
            windows.tokens.append((now, tokens))
            windows.token_total += tokens

    async def current(self, deployment: str, limits: Limits, now: float) -> tuple[int, int] | None:
        with self._lock:
            windows = self._windows.get(deployment)
            if windows is None:
                return 0, 0
            windows.expire(limits, now)
            return len(windows.requests), windows.token_total

    async def forget(self, deployment: str) -> None:
        with self._lock:
            self._windows.pop(deployment, None)
