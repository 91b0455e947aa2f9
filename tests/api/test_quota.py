"""``Quota.admit``, the admission every inference service calls, on a throwaway route of the
in-process app."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from cerulean.api.deps import ApiVersionDep, ChatDeploymentDep
from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.quota.memory import InProcessRateLimiter
from cerulean.quota.redis_limiter import RedisRateLimiter
from cerulean.services.admission import Quota
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord
from tests.conftest import KEY1
from tests.quota_helpers import drop_keys

URL = "/openai/deployments/small/probe?api-version=2024-02-15-preview"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def probe_app(settings: Settings) -> FastAPI:
    app = create_app(settings, {"fake-model": FakeEngine()})

    @app.post("/openai/deployments/{deployment_id}/probe")
    async def probe(
        request: Request, deployment: ChatDeploymentDep, version: ApiVersionDep
    ) -> JSONResponse:
        tokens = int((await request.json())["tokens"])
        state: AppState = request.app.state.cerulean
        quota = Quota(state.limiter, state.clock, version.text)
        headers = await quota.admit(deployment.record, tokens=tokens, capability="chat_completion")
        return JSONResponse({"admitted": tokens}, headers=headers)

    return app


def started(app: FastAPI, clock: Clock) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["api-key"] = KEY1
        state: AppState = app.state.cerulean
        state.clock = clock
        assert state.store is not None
        state.store.put_deployment(
            DeploymentRecord(
                name="small",
                model="fake-model",
                version="1",
                capacity=1,
                sku="Standard",
                created_at=datetime.now(timezone.utc),
            )
        )
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    yield from started(probe_app(settings), clock)


def test_admitted_requests_carry_the_rate_limit_headers(client: TestClient) -> None:
    response = client.post(URL, json={"tokens": 300})
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "1"
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-remaining-tokens"] == "700"
    assert "retry-after" not in response.headers


def test_over_the_call_limit_is_azures_429(client: TestClient, clock: Clock) -> None:
    assert client.post(URL, json={"tokens": 300}).status_code == 200
    clock.now += 2.5
    response = client.post(URL, json={"tokens": 300})
    assert response.status_code == 429
    assert response.json() == {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            "version 2024-02-15-preview have exceeded call rate limit of your current OpenAI S0 "
            "pricing tier. Please retry after 8 seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
            "rate limit.",
        }
    }
    assert response.headers["retry-after"] == "8"
    assert response.headers["retry-after-ms"] == "7500"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-remaining-tokens"] == "700"
    assert response.headers["apim-request-id"]
    clock.now += 7.5
    assert client.post(URL, json={"tokens": 300}).status_code == 200


def test_over_the_token_limit_names_it(client: TestClient, clock: Clock) -> None:
    assert client.post(URL, json={"tokens": 900}).status_code == 200
    clock.now += 30
    response = client.post(URL, json={"tokens": 200})
    assert response.status_code == 429
    assert "exceeded token rate limit" in response.json()["error"]["message"]
    assert response.headers["retry-after"] == "30"
    too_big = client.post(URL, json={"tokens": 1001})
    assert too_big.status_code == 429 and too_big.headers["x-should-retry"] == "false"


def test_unknown_deployment_is_charged_nothing(client: TestClient) -> None:
    url = "/openai/deployments/nope/probe?api-version=2024-10-21"
    assert client.post(url, json={"tokens": 1}).json()["error"]["code"] == "DeploymentNotFound"


def test_limiter_outage_is_a_503(client: TestClient) -> None:
    state: AppState = client.app.state.cerulean  # type: ignore[attr-defined]
    state.limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    response = client.post(URL, json={"tokens": 1})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ServiceUnavailable"
    assert response.headers["retry-after"] == "1"


def test_default_limiter_is_in_process(client: TestClient) -> None:
    state: AppState = client.app.state.cerulean  # type: ignore[attr-defined]
    assert isinstance(state.limiter, InProcessRateLimiter)


def test_two_apps_on_one_redis_share_a_budget(
    tmp_path: object, redis_url: str, clock: Clock
) -> None:
    prefix = f"cerulean-test:{uuid.uuid4().hex}:"
    apps = []
    try:
        for name in ("a", "b"):
            settings = Settings(
                home=f"{tmp_path}/{name}",  # type: ignore[arg-type]
                key1=KEY1,  # type: ignore[arg-type]
                redis_url=redis_url,
                redis_prefix=prefix,
            )
            apps.append(started(probe_app(settings), clock))
        first, second = (next(app) for app in apps)
        assert isinstance(first.app.state.cerulean.limiter, RedisRateLimiter)  # type: ignore[attr-defined]
        assert first.post(URL, json={"tokens": 600}).status_code == 200
        clock.now += 10
        refused = second.post(URL, json={"tokens": 600})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "50"
        assert second.post(URL, json={"tokens": 400}).status_code == 200
    finally:
        for app in apps:
            app.close()
        drop_keys(redis_url, prefix)


class RealClock(Clock):
    """Wall time plus a jump the test controls, so the client's real sleep moves it on."""

    def __init__(self) -> None:
        self.jump = 0.0

    def __call__(self) -> float:
        return time.time() + self.jump


@contextlib.contextmanager
def served(app: FastAPI, clock: Clock) -> Iterator[str]:
    """``app`` behind a real uvicorn on a free port (openai's client needs a real ``httpx``
    client, which Starlette's TestClient no longer is)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    state: AppState = app.state.cerulean
    state.clock = clock
    assert state.store is not None
    state.store.put_deployment(
        DeploymentRecord("small", "fake-model", "1", 1, "Standard", datetime.now(timezone.utc))
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_openai_v1_waits_retry_after_ms_and_succeeds(settings: Settings) -> None:
    clock = RealClock()
    with served(probe_app(settings), clock) as endpoint:
        sdk = openai.AzureOpenAI(
            azure_endpoint=endpoint, api_key=KEY1, api_version="2024-10-21", max_retries=2
        )
        first = sdk.post("/deployments/small/probe", body={"tokens": 300}, cast_to=httpx.Response)
        assert first.status_code == 200
        clock.jump = 9.7  # the request window frees up 0.3 s from now
        started_at = time.monotonic()
        retried = sdk.post("/deployments/small/probe", body={"tokens": 300}, cast_to=httpx.Response)
        waited = time.monotonic() - started_at
        assert retried.status_code == 200
        assert 0.25 <= waited < 2.0, waited


def test_openai_v1_does_not_retry_what_can_never_fit(settings: Settings) -> None:
    with served(probe_app(settings), Clock()) as endpoint:
        sdk = openai.AzureOpenAI(
            azure_endpoint=endpoint, api_key=KEY1, api_version="2024-10-21", max_retries=2
        )
        started_at = time.monotonic()
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.post("/deployments/small/probe", body={"tokens": 5000}, cast_to=httpx.Response)
        assert time.monotonic() - started_at < 1.0
        assert caught.value.code == "429"
        assert caught.value.response.headers["x-should-retry"] == "false"
