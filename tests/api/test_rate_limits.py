"""Rate limits on the real chat route (in-process app, fake engine, a walked clock)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord
from tests.conftest import KEY1

URL = "/openai/deployments/small/chat/completions?api-version=2024-10-21"
ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 10}


class Clock:
    now = 5_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def small(settings: Settings) -> Iterator[tuple[TestClient, Clock]]:
    app = create_app(settings, {"fake-model": FakeEngine(context_length=4096)})
    clock = Clock()
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["api-key"] = KEY1
        state: AppState = app.state.cerulean
        state.clock = clock
        assert state.store is not None
        state.store.put_deployment(
            DeploymentRecord("small", "fake-model", "1", 1, "Standard", datetime.now(timezone.utc))
        )
        yield client, clock


def test_every_answer_carries_the_rate_limit_headers(small: tuple[TestClient, Clock]) -> None:
    client, _ = small
    response = client.post(URL, json=ASK)
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-limit-requests"] == "1"
    # Charged prompt (3 words + 1 in the fake tokenizer) + max_tokens 10.
    assert int(headers["x-ratelimit-remaining-tokens"]) == 1000 - (3 + 10)
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_call_limit_is_azures_429_and_passes(small: tuple[TestClient, Clock]) -> None:
    client, clock = small
    assert client.post(URL, json=ASK).status_code == 200
    refused = client.post(URL, json=ASK)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert refused.json()["error"]["code"] == "429"
    assert message.startswith(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        "2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier."
    )
    assert int(refused.headers["retry-after"]) >= 1 and "retry-after-ms" in refused.headers
    clock.now += 10.5
    assert client.post(URL, json=ASK).status_code == 200


def test_token_limit_counts_max_tokens_times_n(small: tuple[TestClient, Clock]) -> None:
    client, _ = small
    body = {**ASK, "max_tokens": 400, "n": 3}  # 3 + 1,200 > 1,000 tokens a minute
    refused = client.post(URL, json=body)
    assert refused.status_code == 429
    assert "token rate limit" in refused.json()["error"]["message"]
    assert refused.headers.get("x-should-retry") == "false"  # alone bigger than the budget


def test_builtin_deployments_never_throttle(small: tuple[TestClient, Clock]) -> None:
    client, _ = small
    url = URL.replace("small", "gpt-4")
    assert all(client.post(url, json=ASK).status_code == 200 for _ in range(20))


@pytest.mark.parametrize("surface", ["chat", "completions"])
def test_max_tokens_beyond_the_context_is_a_400_before_any_charge(
    small: tuple[TestClient, Clock], surface: str
) -> None:
    client, _ = small
    if surface == "chat":
        url, body = URL, {**ASK, "max_tokens": 200_000_000}
    else:
        url = URL.replace("chat/completions", "completions")
        body = {"prompt": "hello there", "max_tokens": 200_000_000}
    refused = client.post(url, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert "x-should-retry" not in refused.headers
    # Nothing was charged: the one request of this 10 s window is still there.
    assert client.post(URL, json=ASK).status_code == 200


def test_answer_tokens_beyond_the_limit_are_a_400_on_builtin_deployments(
    tmp_path: Path,
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        key1=KEY1,  # type: ignore[arg-type]
        max_answer_tokens=100,
    )
    app = create_app(settings, {"fake-model": FakeEngine(context_length=4096)})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["api-key"] = KEY1
        builtin = URL.replace("small", "gpt-4")
        refused = client.post(builtin, json={**ASK, "n": 8, "max_tokens": 16})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "n" and "at most 100" in error["message"]
        legacy = builtin.replace("chat/completions", "completions")
        assert (
            client.post(legacy, json={"prompt": "hi", "n": 8, "max_tokens": 16}).status_code == 400
        )
        assert client.post(builtin, json={**ASK, "n": 6, "max_tokens": 16}).status_code == 200
