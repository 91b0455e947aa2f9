"""One access-log line and the per-deployment metrics for every request.

:class:`AccessMiddleware` opens the request's :class:`~cerulean.services.accounting.RequestRecord`,
which the services fill in (deployment, operation, tokens, a rate-limit refusal), and once the
response has ended it logs ``cerulean.access`` at INFO and updates :class:`RequestMetrics`:

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

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerulean.services import accounting
from cerulean.services.usage_view import RecentUsage

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
        self.recent = RecentUsage()  # per-minute, in memory: the Studio's usage charts
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
        self.recent.add(
            deployment,
            status=status,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            duration_s=duration,
        )
        self.duration.labels(deployment, operation).observe(duration)
        if ttft is not None:
            self.ttft.labels(deployment, operation).observe(ttft)
        if record.prompt_tokens:
            self.prompt_tokens.labels(deployment).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(deployment).inc(record.completion_tokens)
        if record.rate_limited:
            self.rate_limited.labels(deployment).inc()


class AccessMiddleware:
    """Logs one line per request and feeds :class:`RequestMetrics` (see the module)."""

    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = accounting.opened()
        started = time.perf_counter()
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
            duration = time.perf_counter() - started
            self.metrics.observe(record, status, duration, ttft)
            _log(scope, record, status, duration, ttft)


def _log(
    scope: Scope,
    record: accounting.RequestRecord,
    status: int,
    duration: float,
    ttft: float | None,
) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    version = ""
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        if part.startswith("api-version="):
            version = "?" + part  # the only query parameter worth a log (never a key)
    first = f" ttft_ms={ttft * 1000:.0f}" if ttft is not None else ""
    logger.info(
        '%s "%s %s%s" %d deployment=%s operation=%s prompt_tokens=%d completion_tokens=%d'
        "%s duration_ms=%.0f request_id=%s",
        peer,
        scope.get("method", "-"),
        scope.get("path", "-"),
        version,
        status,
        record.deployment or "-",
        record.operation or "-",
        record.prompt_tokens,
        record.completion_tokens,
        first,
        duration * 1000,
        scope.get("state", {}).get("request_id", "-"),
    )
