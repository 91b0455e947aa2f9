"""Property-based fuzz of the POST routes against a real server with the real model.

Few examples (the in-process fuzz in tests/api/test_fuzz.py runs many): the point is the real
engine behind the HTTP layer, with whatever sampling parameters the spec allows (seeds up to
2**63, logit biases of any token id, json_schema grammars, n, stop lists). Generated
``max_tokens`` / ``max_completion_tokens`` are capped at 4 and ``n`` at 2, so each example costs
a fraction of a second; hostile values that are not positive integers are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given

from tests.conformance.fuzz import check_answer, fuzz_settings, send, wait_idle
from tests.conformance.recorder import recording_client
from tests.conformance.strategies import (
    OPERATIONS,
    Case,
    batch_cases,
    hostile_cases,
    spec_cases,
    upload_cases,
)
from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "n": 2}


def capped(case: Case) -> Case:
    body = case.body()
    if not isinstance(body, dict):
        return case
    small: dict[str, Any] = dict(body)
    for name, cap in CAPS.items():
        value = small.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            small[name] = cap
    if small.get("max_tokens") is None and small.get("max_completion_tokens") is None:
        # Absent or null means the default cap (256 tokens for the embedded model): too slow here.
        small["max_tokens"] = CAPS["max_tokens"]
    return case.with_body(small)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with recording_client(base_url=server.endpoint, timeout=120) as client:
        yield client


def exercise(http: httpx.Client, server: Server, case: Case) -> None:
    check_answer(case, send(http, case, server.key1))
    assert wait_idle(http, server.key1) == {"slots_busy": 0, "requests_waiting": 0}


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=spec_cases(OPERATIONS["chat"], "positive").map(capped))
def test_real_server_chat_bodies_valid_for_the_spec(
    http: httpx.Client, server: Server, case: Case
) -> None:
    exercise(http, server, case)


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=spec_cases(OPERATIONS["chat"], "negative").map(capped))
def test_real_server_chat_bodies_invalid_for_the_spec(
    http: httpx.Client, server: Server, case: Case
) -> None:
    exercise(http, server, case)


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=hostile_cases(OPERATIONS["chat"]).map(capped))
def test_real_server_chat_hostile_requests(http: httpx.Client, server: Server, case: Case) -> None:
    exercise(http, server, case)


def capped_response(case: Case) -> Case:
    """A Responses body with a short answer (the default would be the model's 256 tokens)."""
    try:
        body = case.body()
    except RecursionError:  # a hostile 100,000-deep nesting: sent as it is
        return case
    if not isinstance(body, dict):
        return case
    value = body.get("max_output_tokens")
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 16):
        return case.with_body({**body, "max_output_tokens": 16})
    return case  # a hostile value stays


@fuzz_settings(6, env="FUZZ_E2E_EXAMPLES")
@given(case=spec_cases(OPERATIONS["responses"], "positive").map(capped_response))
def test_real_server_responses_bodies_valid_for_the_spec(
    http: httpx.Client, server: Server, case: Case
) -> None:
    exercise(http, server, case)


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=hostile_cases(OPERATIONS["responses"]).map(capped_response))
def test_real_server_responses_hostile_requests(
    http: httpx.Client, server: Server, case: Case
) -> None:
    exercise(http, server, case)


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=batch_cases())
def test_real_server_batch_requests(http: httpx.Client, server: Server, case: Case) -> None:
    exercise(http, server, case)


@fuzz_settings(12, env="FUZZ_E2E_EXAMPLES")
@given(case=upload_cases())
def test_real_server_file_uploads(http: httpx.Client, server: Server, case: Case) -> None:
    exercise(http, server, case)
