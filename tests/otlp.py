"""A real OTLP/HTTP receiver on loopback for the tests: it decodes the protobuf the server
exports (traces and metrics) with opentelemetry-proto and keeps what it received."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["Point", "Receiver", "Span", "attributes", "receiver"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` pairs as a dict."""
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start: int  # ns since the epoch
    end: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """One histogram data point of one metric."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float
    bounds: tuple[float, ...]


@dataclass
class Receiver:
    port: int = 0
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_traces(self, body: bytes) -> None:
        message = ExportTraceServiceRequest.FromString(body)
        found: list[Span] = []
        for resource_spans in message.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    found.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start=span.start_time_unix_nano,
                            end=span.end_time_unix_nano,
                            attributes=attributes(span.attributes),
                            status_code=span.status.code,
                            resource=resource,
                        )
                    )
        with self.lock:
            self.spans.extend(found)

    def take_metrics(self, body: bytes) -> None:
        message = ExportMetricsServiceRequest.FromString(body)
        found: list[Point] = []
        for resource_metrics in message.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.WhichOneof("data") != "histogram":
                        continue
                    for point in metric.histogram.data_points:
                        found.append(
                            Point(
                                metric=metric.name,
                                unit=metric.unit,
                                attributes=attributes(point.attributes),
                                count=point.count,
                                sum=point.sum,
                                bounds=tuple(point.explicit_bounds),
                            )
                        )
        with self.lock:
            self.points.extend(found)

    def wait_for(self, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check():
                    return
            time.sleep(0.1)
        raise AssertionError(f"the receiver did not get what was expected in {timeout}s")

    def latest(self, metric: str) -> list[Point]:
        """The points of ``metric`` in the newest export that had it (cumulative)."""
        with self.lock:
            points = [p for p in self.points if p.metric == metric]
        newest: dict[tuple[tuple[str, Any], ...], Point] = {}
        for point in points:
            newest[tuple(sorted(point.attributes.items(), key=lambda kv: kv[0]))] = point
        return list(newest.values())


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A running receiver (``/v1/traces``, ``/v1/metrics``), stopped on exit."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                if self.path == "/v1/traces":
                    state.take_traces(body)
                elif self.path == "/v1/metrics":
                    state.take_metrics(body)
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
            except Exception:
                self.send_response(400)
                self.end_headers()
                raise
            with state.lock:
                state.requests += 1
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
