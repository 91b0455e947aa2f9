"""OpenTelemetry traces and metrics of the data plane, after the GenAI semantic conventions.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal
ones; :mod:`cerulean.settings`): then :func:`build_telemetry` returns None, nothing of the SDK is
imported, and the request path pays one ``is None`` check. On, each request that reached a
deployment becomes, once its response has ended:

- a SERVER span ``{gen_ai.operation.name} {deployment}`` (``chat gpt-4o``) with
  ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model`` (the
  deployment), ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.response.finish_reasons``, the request's sampling parameters, the HTTP status and
  ``error.type`` when it failed; its parent is the caller's ``traceparent`` when one was sent;
- child spans ``queue`` (waiting for a slot), ``prompt_processing`` (slot taken to first
  token) and ``generation`` (first token to the end), and for a remote engine one CLIENT span
  ``upstream {name}`` per call to an upstream (failed attempts included, with ``error.type``);
- the metrics ``gen_ai.client.token.usage``, ``gen_ai.server.request.duration``,
  ``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token``, with the
  conventions' bucket boundaries.

The spans are made after the fact from the request's record (its ``perf_counter`` readings
turned into wall-clock times), so nothing is created while a request runs; the SDK's batch
span processor and periodic metric reader export from their own threads over OTLP/HTTP
(protobuf). Prompts and answers are recorded (``gen_ai.input.messages``,
``gen_ai.output.messages``) only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cerulean import __version__
from cerulean.services.accounting import RequestRecord
from cerulean.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["OPERATION_NAMES", "Telemetry", "build_telemetry"]

logger = logging.getLogger(__name__)

# Cerulean's operations as the conventions name them.
OPERATION_NAMES = {
    "chat_completion": "chat",
    "completion": "text_completion",
    "embeddings": "embeddings",
}
PROVIDER = "azure.ai.openai"  # what the data plane speaks (gen_ai.provider.name)

# The conventions' advisory bucket boundaries.
TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 ... 81.92 s
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5]
TTFT_BUCKETS += [5.0, 7.5, 10.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]


def build_telemetry(settings: Settings) -> Telemetry | None:
    """The app's telemetry, or None when no OTLP endpoint is configured (then nothing of the
    SDK is imported)."""
    traces, metrics = settings.otel_traces_url, settings.otel_metrics_url
    if traces is None and metrics is None:
        return None
    return Telemetry(traces, metrics, capture=settings.otel_capture_content)


class Telemetry:
    """The tracer and meter providers of one app (never the global ones) and its instruments."""

    def __init__(self, traces_url: str | None, metrics_url: str | None, *, capture: bool) -> None:
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over these defaults.
        resource = Resource.create({SERVICE_NAME: "cerulean", SERVICE_VERSION: __version__})
        self.capture = capture
        self._tracer_provider: TracerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        self._tracer: Any = None
        self._instruments: dict[str, Any] = {}
        if traces_url is not None:
            self._start_traces(traces_url, resource)
        if metrics_url is not None:
            self._start_metrics(metrics_url, resource)
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._propagator = TraceContextTextMapPropagator()
        logger.info(
            "OpenTelemetry on: traces to %s, metrics to %s%s",
            traces_url or "nowhere",
            metrics_url or "nowhere",
            " (with prompts and answers)" if capture else "",
        )

    @property
    def traced(self) -> bool:
        return self._tracer is not None

    def _start_traces(self, url: str, resource: Any) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER is honoured
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self._tracer_provider = provider
        self._tracer = provider.get_tracer("cerulean", __version__)

    def _start_metrics(self, url: str, resource: Any) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url))
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        self._meter_provider = provider
        meter = provider.get_meter("cerulean", __version__)
        self._instruments = {
            "tokens": meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            ),
            "duration": meter.create_histogram(
                "gen_ai.server.request.duration",
                unit="s",
                description="Generative AI server request duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            "ttft": meter.create_histogram(
                "gen_ai.server.time_to_first_token",
                unit="s",
                description="Time to generate first token for successful responses.",
                explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
            ),
            "tpot": meter.create_histogram(
                "gen_ai.server.time_per_output_token",
                unit="s",
                description="Time per output token generated after the first token for "
                "successful responses.",
                explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
            ),
        }

    # -- one request ------------------------------------------------------------------------

    def observe(
        self,
        record: RequestRecord,
        *,
        status: int,
        ended: float,
        headers: Mapping[str, str],
        request_id: str,
        method: str,
        path: str,
    ) -> str | None:
        """Export ``record`` (a request that reached a deployment and ended at ``ended``, a
        ``perf_counter`` reading); the trace id of its span (hex), if traced."""
        operation = OPERATION_NAMES.get(record.operation or "", record.operation or "")
        common: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": record.deployment or "",
        }
        if record.response_model:
            common["gen_ai.response.model"] = record.response_model
        error = str(status) if status >= 400 else None
        if self._instruments:
            self._measure(record, common, error, ended)
        if self._tracer is None:
            return None
        return self._trace(record, common, error, status, ended, headers, request_id, method, path)

    def _measure(
        self, record: RequestRecord, common: dict[str, Any], error: str | None, ended: float
    ) -> None:
        tokens = self._instruments["tokens"]
        if record.prompt_tokens:
            tokens.record(record.prompt_tokens, {**common, "gen_ai.token.type": "input"})
        if record.completion_tokens:
            tokens.record(record.completion_tokens, {**common, "gen_ai.token.type": "output"})
        attributes = common if error is None else {**common, "error.type": error}
        self._instruments["duration"].record(ended - record.started, attributes)
        if error is not None or record.first_output is None:
            return
        self._instruments["ttft"].record(record.first_output - record.started, common)
        if record.completion_tokens > 1:
            per_token = (ended - record.first_output) / (record.completion_tokens - 1)
            self._instruments["tpot"].record(per_token, common)

    def _trace(
        self,
        record: RequestRecord,
        common: dict[str, Any],
        error: str | None,
        status: int,
        ended: float,
        headers: Mapping[str, str],
        request_id: str,
        method: str,
        path: str,
    ) -> str:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        to_ns = _clock_offset()
        parent = self._parent(headers)
        attributes: dict[str, Any] = {
            **common,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "http.request.method": method,
            "http.response.status_code": status,
            "url.path": path,
            "az.service_request_id": request_id,
        }
        if record.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = list(record.finish_reasons)
        if record.caller:
            attributes["cerulean.caller"] = record.caller
        if error is not None:
            attributes["error.type"] = error
        for name, value in (record.request_params or {}).items():
            if value is not None:
                attributes[name] = value
        if record.capture:
            attributes.update(_content(record))
        span = self._tracer.start_span(
            f"{common['gen_ai.operation.name']} {record.deployment}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=to_ns(record.started),
        )
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        inside = trace.set_span_in_context(span)
        for name, start, end, extra, kind in _children(record, ended):
            child = self._tracer.start_span(
                name, context=inside, kind=kind, attributes=extra, start_time=to_ns(start)
            )
            child.end(end_time=to_ns(end))
        span.end(end_time=to_ns(ended))
        return format(span.get_span_context().trace_id, "032x")

    def _parent(self, headers: Mapping[str, str]) -> Context | None:
        if "traceparent" not in headers:
            return None
        return self._propagator.extract(carrier=dict(headers))

    def shutdown(self) -> None:
        """Export what is left and stop (blocking: run it off the event loop)."""
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is None:
                continue
            try:
                provider.shutdown()
            except Exception:  # an unreachable collector must not fail the server's stop
                logger.warning("could not flush the telemetry", exc_info=True)


def _clock_offset() -> Any:
    """``perf_counter`` readings to wall-clock nanoseconds (the epoch), as the spans want."""
    offset = time.time() - time.perf_counter()
    return lambda reading: int((reading + offset) * 1e9)


def _children(
    record: RequestRecord, ended: float
) -> list[tuple[str, float, float, dict[str, Any], Any]]:
    """The child spans of a request: queueing, prompt processing and generation (a local
    engine), the calls to upstreams (a remote one)."""
    from opentelemetry.trace import SpanKind

    out: list[tuple[str, float, float, dict[str, Any], Any]] = []
    phases, first = record.phases, record.first_output
    internal = SpanKind.INTERNAL
    if phases is not None:
        if phases.queued is not None and phases.admitted is not None:
            out.append(("queue", phases.queued, phases.admitted, {}, internal))
            if first is not None:
                out.append(("prompt_processing", phases.admitted, first, {}, internal))
        for call in phases.calls:
            extra: dict[str, Any] = {
                "server.address": call.address,
                "cerulean.upstream": call.upstream,
            }
            if call.error is not None:
                extra["error.type"] = call.error
            end = call.ended if call.ended is not None else ended
            out.append((f"upstream {call.upstream}", call.started, end, extra, SpanKind.CLIENT))
    if first is not None:
        extra = {"gen_ai.usage.output_tokens": record.completion_tokens}
        out.append(("generation", first, ended, extra, internal))
    return out


def _content(record: RequestRecord) -> dict[str, str]:
    """Prompts and answers in the conventions' shape (only when capture is on)."""
    out: dict[str, str] = {}
    if record.input_messages is not None:
        messages = [
            {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
            for m in record.input_messages
        ]
        out["gen_ai.input.messages"] = json.dumps(messages)
    if record.output_texts is not None:
        reasons = record.finish_reasons
        answers = [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
                "finish_reason": reasons[i] if i < len(reasons) else "",
            }
            for i, text in sorted(record.output_texts.items())
        ]
        out["gen_ai.output.messages"] = json.dumps(answers)
    return out
