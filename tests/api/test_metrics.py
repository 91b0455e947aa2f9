"""Per-deployment request metrics, the metrics token, the access line and the 404 debug line
(issue 13 items 10 and 11), on the in-process app with the fake engine."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord
from tests.conftest import KEY1

TOKEN = "metrics-scrape-token-0123456789abcdef"
CHAT = "/openai/deployments/{}/chat/completions?api-version=2024-10-21"
ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    app = create_app(settings, {"fake-model": FakeEngine(context_length=4096)})
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["api-key"] = KEY1
        state: AppState = app.state.cerulean
        state.store.put_deployment(
            DeploymentRecord("tiny", "fake-model", "1", 2, "Standard", datetime.now(timezone.utc))
        )
        yield http


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_per_deployment(client: TestClient) -> None:
    assert client.post(CHAT.format("tiny"), json=ASK).status_code == 200
    streamed = client.post(CHAT.format("tiny"), json={**ASK, "stream": True})
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    refused = [client.post(CHAT.format("tiny"), json=ASK).status_code for _ in range(8)]
    assert 429 in refused  # capacity 2: 2 requests per 10 s
    assert client.post(CHAT.format("nope"), json=ASK).status_code == 404
    text = client.get("/metrics").text
    found = samples(text)
    ok = found[
        (
            "cerulean_requests_total",
            (("deployment", "tiny"), ("operation", "chat_completion"), ("status", "200")),
        )
    ]
    limited = found[
        (
            "cerulean_requests_total",
            (("deployment", "tiny"), ("operation", "chat_completion"), ("status", "429")),
        )
    ]
    assert ok == 2 + refused.count(200) and limited == refused.count(429)
    assert found[("cerulean_rate_limited_total", (("deployment", "tiny"),))] == limited
    assert found[("cerulean_prompt_tokens_total", (("deployment", "tiny"),))] > 0
    assert found[("cerulean_completion_tokens_total", (("deployment", "tiny"),))] > 0
    duration = ("deployment", "tiny"), ("operation", "chat_completion")
    assert found[("cerulean_request_duration_seconds_count", duration)] == ok + limited
    assert found[("cerulean_time_to_first_token_seconds_count", duration)] == 1  # the stream
    assert 'deployment="nope"' not in text  # unknown names get no label of their own
    assert "cerulean_engine_slots" in text  # the engine metrics are still there


def test_metrics_token_opens_metrics_only(client: TestClient) -> None:
    del client.headers["api-key"]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"api-key": KEY1}).status_code == 200
    assert client.post(CHAT.format("tiny"), json=ASK, headers=bearer).status_code == 401
    answer = client.get("/metrics", headers={"api-key": "0" * 32})
    assert answer.status_code == 401 and "error" in answer.json()


def test_one_access_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cerulean.access"):
        assert client.post(CHAT.format("tiny"), json=ASK).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "cerulean.access"]
    assert len(lines) == 1
    line = lines[0]
    assert '"POST /openai/deployments/tiny/chat/completions?api-version=2024-10-21" 200' in line
    assert "deployment=tiny operation=chat_completion prompt_tokens=" in line
    assert "completion_tokens=" in line and "duration_ms=" in line
    assert KEY1 not in line


def test_a_bare_404_says_why_at_debug(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert (
            client.post(
                CHAT.format("tiny").replace("2024-10-21", "2031-01-01"), json=ASK
            ).status_code
            == 404
        )
        assert client.get("/openai/nothing-here").status_code == 404
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(
        "api-version '2031-01-01' is not known; this route serves api-version 2022-03-01-preview"
        in m
        for m in messages
    )
    assert any("404 for GET /openai/nothing-here: no such route" in m for m in messages)
