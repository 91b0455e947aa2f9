"""What one request did, for its access-log line and the per-deployment metrics.

The request middleware (:class:`cerulean.api.access.AccessMiddleware`) opens a
:class:`RequestRecord` for each request; the services fill it in as they learn things (the
deployment, the tokens, a rate-limit refusal) through :func:`current`, a context variable, so no
service signature changes. Outside a request (unit tests of a service) :func:`current` gives a
throwaway record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["RequestRecord", "current", "opened"]


@dataclass
class RequestRecord:
    """One request's facts; the middleware adds the status and timings."""

    deployment: str | None = None
    operation: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: bool = False


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("cerulean_request", default=None)


def current() -> RequestRecord:
    """The record of the request being served (a fresh one outside any request)."""
    record = _CURRENT.get()
    return record if record is not None else RequestRecord()


def opened() -> RequestRecord:
    """Open the record of a new request in this context (the middleware calls it)."""
    record = RequestRecord()
    _CURRENT.set(record)
    return record
