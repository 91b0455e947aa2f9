"""Per-upstream metrics for ``/metrics``: in flight, requests, errors by kind, cooldowns, time to
first chunk and duration (Prometheus' client library, in a registry of the app's own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["UpstreamStats"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class UpstreamStats:
    """The upstream metrics of one app (its own registry: several apps in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["upstream"]
        self.in_flight = Gauge(
            "cerulean_upstream_in_flight",
            "Requests this process has in flight on the upstream.",
            labels,
            registry=self.registry,
        )
        self.requests = Counter(
            "cerulean_upstream_requests",
            "Requests sent to the upstream.",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "cerulean_upstream_errors",
            "Failed requests, by kind (connect, timeout, server_error, rate_limited, "
            "misconfigured, bad_stream, broken_stream, client_error).",
            ["upstream", "kind"],
            registry=self.registry,
        )
        self.cooldowns = Counter(
            "cerulean_upstream_cooldowns",
            "Times the upstream was taken out of routing after a failure.",
            labels,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "cerulean_upstream_time_to_first_chunk_seconds",
            "Seconds from sending a request to the upstream's first chunk.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "cerulean_upstream_request_duration_seconds",
            "Seconds from sending a request to the end of the upstream's answer.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def started(self, upstream: str) -> None:
        self.requests.labels(upstream).inc()
        self.in_flight.labels(upstream).inc()

    def first_byte(self, upstream: str, seconds: float) -> None:
        self.ttft.labels(upstream).observe(seconds)

    def ended(self, upstream: str, seconds: float) -> None:
        self.in_flight.labels(upstream).dec()
        self.duration.labels(upstream).observe(seconds)

    def error(self, upstream: str, kind: str) -> None:
        self.errors.labels(upstream, kind).inc()

    def cooled(self, upstream: str) -> None:
        self.cooldowns.labels(upstream).inc()
