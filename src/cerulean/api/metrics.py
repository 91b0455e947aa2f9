"""``GET /metrics``: the engines', deployments' and upstreams' metrics in Prometheus' text format.

It needs an account key, or ``Authorization: Bearer <CERULEAN_METRICS_TOKEN>`` (a token for a
Prometheus scrape that opens nothing else). The per-deployment request metrics are described in
:mod:`cerulean.api.access`.

Operators and the soak test read it to see that no slot leaks: after the load stops,
``cerulean_engine_slots_busy`` and ``cerulean_engine_requests_waiting`` return to 0.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cerulean.api.deps import StateDep
from cerulean.engines.base import Engine
from cerulean.errors import AuthenticationTypeDisabled, InvalidSubscriptionKey, MissingCredentials
from cerulean.services.auth import check_credentials
from cerulean.state import AppState

__all__ = ["PATH", "router"]

router = APIRouter()

# stats() key -> (metric name, help, is a counter)
_METRICS: dict[str, tuple[str, str, bool]] = {
    "slots": ("slots", "Requests the model can generate at once.", False),
    "slots_busy": ("slots_busy", "Slots held by running requests.", False),
    "waiting": ("requests_waiting", "Requests waiting for a slot.", False),
    "running": ("requests_running", "Requests holding slots.", False),
    "kv_tokens": ("kv_cells_used", "KV cache positions held by running requests.", False),
    "cached_prefixes": ("prefix_cache_entries", "Prompt prefixes kept for reuse.", False),
    "cached_tokens": ("prefix_cache_tokens", "Tokens in kept prompt prefixes.", False),
    "admitted": ("requests_admitted", "Requests that got a slot.", True),
    "rejected": ("requests_rejected", "Requests refused with 429 (line full).", True),
    "prompt_tokens_computed": ("prompt_tokens_computed", "Prompt tokens evaluated.", True),
    "prompt_tokens_reused": ("prompt_tokens_reused", "Prompt tokens taken from the cache.", True),
}


class _EngineCollector(Collector):
    def __init__(self, engines: dict[str, Engine]) -> None:
        self._engines = engines

    def collect(self) -> Iterator[Metric]:
        # A copy: the engine pool adds and removes engines on the event loop meanwhile.
        samples = {name: engine.stats() for name, engine in dict(self._engines).items()}
        for key, (name, text, counter) in _METRICS.items():
            family: GaugeMetricFamily | CounterMetricFamily
            if counter:
                family = CounterMetricFamily(f"cerulean_engine_{name}", text, labels=["model"])
            else:
                family = GaugeMetricFamily(f"cerulean_engine_{name}", text, labels=["model"])
            for model, stats in samples.items():
                if key in stats:
                    family.add_metric([model], stats[key])
            yield family


PATH = "/metrics"


async def _authorize(request: Request, state: AppState) -> None:
    """The metrics token (constant-time compare), else an account key as on every route (not
    while the account disables key authentication)."""
    token = state.settings.metrics_token
    header = request.headers.get("authorization", "")
    if token is not None and token.get_secret_value() and header[:7].lower() == "bearer ":
        presented = header[7:].strip().encode()
        if hmac.compare_digest(presented, token.get_secret_value().encode()):
            return
    await state.keyring.refresh()
    sent = "api-key" in request.headers or "authorization" in request.headers
    if sent and state.keyring.local_auth_disabled:
        raise AuthenticationTypeDisabled()  # the metrics token still opens it
    verdict = check_credentials(request.headers, state.keyring.verifier)
    if not verdict.ok and await state.keyring.refresh(failed=True):
        verdict = check_credentials(request.headers, state.keyring.verifier)
    if not verdict.ok:
        raise InvalidSubscriptionKey() if verdict.api_key_sent else MissingCredentials()


@router.get(PATH)
async def metrics(request: Request, state: StateDep) -> Response:
    await _authorize(request, state)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EngineCollector(state.engines))
    text = generate_latest(registry)
    text += generate_latest(request.app.state.request_metrics.registry)
    if state.pool.gateway is not None:  # per upstream: in flight, requests, errors, latency
        text += generate_latest(state.pool.gateway.stats.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
