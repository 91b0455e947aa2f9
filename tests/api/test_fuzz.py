"""Property-based fuzz of the POST routes, in-process with the fake engine (docs/conformance.md).

Many examples, fast: spec-valid bodies, spec-invalid bodies (schemathesis) and hostile requests.
Each must get an answer that is not a 5xx, is Azure-shaped and validates against the spec; after
each, the app is healthy and no engine slot is held.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.engines.fake_embeddings import FakeEmbedder
from cerulean.settings import Settings
from tests.conformance.fuzz import check_answer, fuzz_settings, send, wait_idle
from tests.conformance.recorder import record_responses
from tests.conformance.strategies import (
    OPERATIONS,
    Case,
    batch_cases,
    hostile_cases,
    spec_cases,
    upload_cases,
)
from tests.conftest import KEY1, KEY2


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for all examples; a context long enough for most generated prompts."""
    home = Path(tmp_path_factory.mktemp("fuzz")) / "home"
    settings = Settings(home=home, key1=KEY1, key2=KEY2)  # type: ignore[arg-type]
    app = create_app(
        settings,
        {"fake-model": FakeEngine(context_length=4096)},
        embedders={"fake-embedder": FakeEmbedder()},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        record_responses(client)
        yield client


def exercise(client: TestClient, case: Case) -> None:
    check_answer(case, send(client, case, KEY1))
    assert wait_idle(client, KEY1, timeout=1) == {"slots_busy": 0, "requests_waiting": 0}


@fuzz_settings(100)
@given(case=spec_cases(OPERATIONS["chat"], "positive"))
def test_chat_bodies_valid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(50)
@given(case=spec_cases(OPERATIONS["chat"], "negative"))
def test_chat_bodies_invalid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(300)
@given(case=hostile_cases(OPERATIONS["chat"]))
def test_chat_hostile_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(40)
@given(case=spec_cases(OPERATIONS["completions"], "positive"))
def test_completions_bodies_valid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(100)
@given(case=hostile_cases(OPERATIONS["completions"]))
def test_completions_hostile_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(40)
@given(case=spec_cases(OPERATIONS["embeddings"], "positive"))
def test_embeddings_bodies_valid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(100)
@given(case=hostile_cases(OPERATIONS["embeddings"]))
def test_embeddings_hostile_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(60)
@given(case=spec_cases(OPERATIONS["responses"], "positive"))
def test_responses_bodies_valid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(30)
@given(case=spec_cases(OPERATIONS["responses"], "negative"))
def test_responses_bodies_invalid_for_the_spec(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(150)
@given(case=hostile_cases(OPERATIONS["responses"]))
def test_responses_hostile_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(60)
@given(case=hostile_cases(OPERATIONS["responses-dated"]))
def test_responses_dated_hostile_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(150)
@given(case=batch_cases())
def test_batch_create_and_cancel_requests(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)


@fuzz_settings(100)
@given(case=upload_cases())
def test_file_uploads(app_client: TestClient, case: Case) -> None:
    exercise(app_client, case)
