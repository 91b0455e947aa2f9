"""What one request did, for its log line, the metrics, usage accounting and its trace.

The request middleware (:class:`cerulean.api.access.AccessMiddleware`) opens a
:class:`RequestRecord` for each request; the services fill it in as they learn things (the
deployment, the caller, the tokens, a rate-limit refusal, when the first output came, the
engine's phases) through :func:`current`, a context variable, so no service signature changes.
Outside a request (unit tests of a service) :func:`current` gives a throwaway record.

Everything here is plain attributes and ``time.perf_counter()`` readings: cheap enough to fill
in on every request whether or not telemetry is on.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from cerulean.engines.base import Phases

__all__ = ["RequestRecord", "current", "opened"]


@dataclass(slots=True)
class RequestRecord:
    """One request's facts; the middleware adds the status and timings.

    Times are ``time.perf_counter()`` readings; ``started`` is the request's arrival.
    """

    deployment: str | None = None
    operation: str | None = None
    caller: str | None = None  # "key1", "key2" or an Entra principal id, once authenticated
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_output: float | None = None  # the first generated text or call
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    request_params: dict[str, Any] | None = None  # gen_ai.request.* (max_tokens, temperature...)
    phases: Phases | None = None  # the engine's queueing and upstream times
    traced: bool = False  # whether telemetry records a span for it
    capture: bool = False  # whether prompts and answers may be recorded (telemetry, opted in)
    input_messages: list[dict[str, Any]] | None = None  # only when ``capture``
    output_texts: dict[int, str] | None = None  # choice index -> text, only when ``capture``

    def output(self, at: float | None = None) -> None:
        """Note generated output now (the first call sets the time to first token)."""
        if self.first_output is None:
            self.first_output = time.perf_counter() if at is None else at


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("cerulean_request", default=None)


def current() -> RequestRecord:
    """The record of the request being served (a fresh one outside any request)."""
    record = _CURRENT.get()
    return record if record is not None else RequestRecord()


def opened(*, traced: bool = False, capture: bool = False) -> RequestRecord:
    """Open the record of a new request in this context (the middleware calls it)."""
    record = RequestRecord(traced=traced, capture=capture)
    _CURRENT.set(record)
    return record
