"""What every fuzzed request must get back, for the in-process and the real-server fuzz tests.

* never a 5xx; every non-2xx an Azure-shaped error (never FastAPI's ``{"detail": ...}``);
* every body (JSON, or each stream event) valid for the spec (tests/conformance/validator.py);
* the server stays healthy: ``/healthz`` answers 200 and ``/metrics`` shows no busy slot.

Knobs (environment): ``FUZZ_EXAMPLES`` (in-process examples per strategy, default 100),
``FUZZ_E2E_EXAMPLES`` (real-server examples, default 12), ``FUZZ_RANDOM=1`` (new random examples
on each run instead of the fixed, derandomized ones).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import httpx
from hypothesis import HealthCheck, settings

from tests.conformance.strategies import GOOD_KEY, Case
from tests.conformance.validator import Exchange, conformance, report

__all__ = ["busy_slots", "check_answer", "fuzz_settings", "send", "wait_idle"]


def fuzz_settings(default_examples: int, env: str = "FUZZ_EXAMPLES") -> settings:
    """Hypothesis settings: the example count from ``env``, derandomized unless FUZZ_RANDOM=1."""
    return settings(
        max_examples=int(os.environ.get(env, default_examples)),
        derandomize=os.environ.get("FUZZ_RANDOM") != "1",
        database=None,
        deadline=None,
        # The app (or server) is shared by all examples on purpose: its health after every one
        # of them is part of the property.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def send(client: httpx.Client, case: Case, key: str) -> httpx.Response:
    """POST ``case`` with ``key`` where it asks for a valid one."""
    headers = {name: value.replace(GOOD_KEY, key) for name, value in case.headers.items()}
    return client.post(case.url(), content=case.content, headers=headers)


def check_answer(case: Case, response: httpx.Response) -> None:
    """Assert the properties every answer must have (the message shows the request)."""
    shown = f"{case.url()} {case.headers} {case.content[:300]!r}"
    assert response.status_code < 500, f"{response.status_code} for {shown}: {response.text[:500]}"
    exchange = Exchange(
        "POST",
        response.request.url.path,
        case.api_version,
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
    )
    violations = conformance().check(exchange)
    assert not violations, f"for {shown}:\n{report(violations)}"
    if response.status_code >= 400:
        body: Any = response.json()
        assert "detail" not in body, body


def busy_slots(client: httpx.Client, key: str) -> dict[str, float]:
    """``cerulean_engine_slots_busy`` and ``..._requests_waiting`` summed over models."""
    text = client.get("/metrics", headers={"api-key": key}).text
    totals = {"slots_busy": 0.0, "requests_waiting": 0.0}
    for name, value in re.findall(r"^cerulean_engine_(\w+)\{[^}]*\} (\S+)$", text, re.M):
        if name in totals:
            totals[name] += float(value)
    return totals


def wait_idle(client: httpx.Client, key: str, timeout: float = 10) -> dict[str, float]:
    """Health, then the engine's gauges once idle (or as they are after ``timeout``)."""
    assert client.get("/healthz").status_code == 200
    deadline = time.monotonic() + timeout
    while True:
        gauges = busy_slots(client, key)
        if not any(gauges.values()) or time.monotonic() > deadline:
            return gauges
        time.sleep(0.05)
