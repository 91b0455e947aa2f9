"""One access-log line, the per-deployment metrics, usage and telemetry for every request.

:class:`AccessMiddleware` opens the request's :class:`~cerulean.services.accounting.RequestRecord`,
which the services fill in (deployment, operation, caller, tokens, a rate-limit refusal, the
first output), and once the response has ended it logs ``cerulean.access`` at INFO (the same
fields as JSON with ``--log-format json``: :mod:`cerulean.logformat`), hands a request that
reached a deployment to the usage recorder and the telemetry (when on:
:mod:`cerulean.services.usage`, :mod:`cerulean.services.telemetry`) and updates
:class:`RequestMetrics`:

- ``cerulean_requests_total{deployment,operation,status}``
- ``cerulean_prompt_tokens_total`` / ``cerulean_completion_tokens_total{deployment}``
- ``cerulean_request_duration_seconds{deployment,operation}`` (a histogram)
- ``cerulean_time_to_first_token_seconds{deployment,operation}``: streamed answers, the time to
  the first event that carries generated text or a tool call
- ``cerulean_rate_limited_total{deployment}``: requests refused with a rate-limit 429

Only deployments that exist get their own label (a request for an unknown name counts under
``deployment=""``), so a scanner cannot grow the label set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerulean.logformat import ACCESS_FIELDS
from cerulean.services import accounting
from cerulean.services.usage import Served

if TYPE_CHECKING:
    from cerulean.services.telemetry import Telemetry
    from cerulean.services.usage import UsageRecorder

__all__ = ["AccessMiddleware", "RequestMetrics"]

logger = logging.getLogger("cerulean.access")

# Seconds: from a token-sized answer on a warm slot to a long generation.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# What marks an SSE event as carrying generated output (not the role or filter preamble).
_OUTPUT_MARKERS = (b'"content":"', b'"text":"', b'"tool_calls":[{', b'"arguments":"')


class RequestMetrics:
    """The per-deployment request metrics of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["deployment", "operation"]
        self.requests = Counter(
            "cerulean_requests",
            "Requests answered, by deployment, operation and HTTP status.",
            [*labels, "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "cerulean_prompt_tokens",
            "Prompt tokens served.",
            ["deployment"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "cerulean_completion_tokens",
            "Completion tokens generated.",
            ["deployment"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cerulean_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer.",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "cerulean_time_to_first_token_seconds",
            "Streamed answers: seconds from arrival to the first event with generated output.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "cerulean_rate_limited",
            "Requests refused by a deployment's rate limits (429).",
            ["deployment"],
            registry=self.registry,
        )

    def observe(
        self,
        record: accounting.RequestRecord,
        status: int,
        duration: float,
        ttft: float | None,
    ) -> None:
        deployment, operation = record.deployment or "", record.operation or ""
        self.requests.labels(deployment, operation, str(status)).inc()
        if record.deployment is None:
            return
        self.duration.labels(deployment, operation).observe(duration)
        if ttft is not None:
            self.ttft.labels(deployment, operation).observe(ttft)
        if record.prompt_tokens:
            self.prompt_tokens.labels(deployment).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(deployment).inc(record.completion_tokens)
        if record.rate_limited:
            self.rate_limited.labels(deployment).inc()


Observers = Callable[[], "tuple[UsageRecorder | None, Telemetry | None]"]


def _none() -> tuple[UsageRecorder | None, Telemetry | None]:
    return None, None


class AccessMiddleware:
    """Logs one line per request and feeds :class:`RequestMetrics`, the usage recorder and the
    telemetry (see the module).

    ``observers`` gives the app's usage recorder and telemetry (None when off, or before the
    lifespan made them): with both off a request costs what it did before, two None checks.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: RequestMetrics, observers: Observers = _none
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.observers = observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        usage, telemetry = self.observers()
        traced = capture = False
        if telemetry is not None:
            traced = telemetry.traced
            capture = traced and telemetry.capture
        record = accounting.opened(traced=traced, capture=capture)
        started = record.started
        status = 500
        streamed = False
        ttft: float | None = None

        async def watch(message: Message) -> None:
            nonlocal status, streamed, ttft
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                streamed = content_type.startswith(b"text/event-stream")
            elif streamed and ttft is None and message["type"] == "http.response.body":
                body = message.get("body", b"")
                if any(marker in body for marker in _OUTPUT_MARKERS):
                    ttft = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            ended = time.perf_counter()
            duration = ended - started
            self.metrics.observe(record, status, duration, ttft)
            first = record.first_output
            served_ttft = first - started if first is not None else ttft
            trace_id = None
            if record.operation is not None and record.deployment is not None:
                if usage is not None:
                    usage.add(_served(record, status, duration, served_ttft))
                if telemetry is not None:
                    trace_id = _export(telemetry, scope, record, status, ended)
            _log(scope, record, status, duration, served_ttft, trace_id)


def _served(
    record: accounting.RequestRecord, status: int, duration: float, ttft: float | None
) -> Served:
    assert record.deployment is not None and record.operation is not None
    return Served(
        ended_at=time.time(),
        deployment=record.deployment,
        caller=record.caller or "",
        operation=record.operation,
        status=status,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        ttft=ttft,
        duration=duration,
        throttled=record.rate_limited,
    )


def _export(
    telemetry: Telemetry, scope: Scope, record: accounting.RequestRecord, status: int, ended: float
) -> str | None:
    try:
        return telemetry.observe(
            record,
            status=status,
            ended=ended,
            headers=Headers(scope=scope),
            request_id=scope.get("state", {}).get("request_id", ""),
            method=scope.get("method", ""),
            path=scope.get("path", ""),
        )
    except Exception:  # telemetry must never fail a request
        logger.warning("could not record the request's telemetry", exc_info=True)
        return None


def _log(
    scope: Scope,
    record: accounting.RequestRecord,
    status: int,
    duration: float,
    ttft: float | None,
    trace_id: str | None,
) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    version = ""
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        if part.startswith("api-version="):
            version = part[len("api-version=") :]  # the only query parameter worth a log
    request_id = scope.get("state", {}).get("request_id", "-")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "peer": peer,
        "method": scope.get("method", "-"),
        "path": scope.get("path", "-"),
        "api_version": version or None,
        "status": status,
        "deployment": record.deployment,
        "operation": record.operation,
        "caller": record.caller,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "ttft_ms": round(ttft * 1000, 1) if ttft is not None else None,
        "duration_ms": round(duration * 1000, 1),
    }
    if trace_id is not None:
        fields["trace_id"] = trace_id
    first = f" ttft_ms={ttft * 1000:.0f}" if ttft is not None else ""
    caller = f" caller={record.caller}" if record.caller else ""
    logger.info(
        '%s "%s %s%s" %d deployment=%s operation=%s prompt_tokens=%d completion_tokens=%d'
        "%s duration_ms=%.0f request_id=%s%s",
        peer,
        fields["method"],
        fields["path"],
        f"?api-version={version}" if version else "",
        status,
        record.deployment or "-",
        record.operation or "-",
        record.prompt_tokens,
        record.completion_tokens,
        first,
        duration * 1000,
        request_id,
        caller,
        extra={ACCESS_FIELDS: fields},
    )
