"""Liveness and readiness, and a Redis outage as clients and the log see it (a private
``redis-server`` the tests stop and restart)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord, UpstreamRecord
from tests.conftest import KEY1, KEY2
from tests.live import free_port, live_server
from tests.quota_helpers import PrivateRedis, private_redis

__all__ = ["private_redis"]  # the fixture, used by name

CHAT = "/openai/deployments/gpt-4/chat/completions?api-version=2024-10-21"
ASK = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(home=tmp_path / "home", key1=KEY1, key2=KEY2, **extra)  # type: ignore[arg-type]


@pytest.fixture
def probe(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[TestClient]:
    settings = _settings(tmp_path, redis_url=private_redis.url, upstream_health_interval=0.2)
    app = create_app(settings, {"fake-model": FakeEngine()})
    with TestClient(app, raise_server_exceptions=False) as client:  # no api-key: probes need none
        yield client


def test_readiness_follows_redis_and_liveness_does_not(
    probe: TestClient, private_redis: PrivateRedis
) -> None:
    ready = probe.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": "ok", "rate_limiter": "ok", "deployments": "ok"},
    }
    private_redis.stop()
    down = probe.get("/readyz")
    assert down.status_code == 503 and down.headers["retry-after"] == "1"
    body = down.json()
    assert body["status"] == "unavailable" and body["checks"]["store"] == "ok"
    assert body["checks"]["rate_limiter"] != "ok"
    assert body["error"]["code"] == "ServiceUnavailable"
    assert body["error"]["message"].startswith("Not ready: rate_limiter: ")
    assert probe.head("/readyz").status_code == 503
    # Liveness and the start-up check do not depend on Redis.
    assert probe.get("/livez").status_code == 200 and probe.get("/healthz").status_code == 200
    assert probe.get("/readyz?exclude=rate_limiter").status_code == 200
    private_redis.start()
    assert probe.get("/readyz").status_code == 200  # the first probe after it returns


def test_a_deployment_whose_upstreams_all_fail_is_not_ready(probe: TestClient) -> None:
    state: AppState = probe.app.state.cerulean  # type: ignore[attr-defined]
    now = datetime.now(timezone.utc)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    state.store.put_upstream(
        UpstreamRecord("dead", dead, "openai", "m", None, None, None, 1.0, now)
    )
    state.store.put_deployment(
        DeploymentRecord("remote", "m", "1", 10, "Standard", now, upstreams=("dead",))
    )
    state.store.put_deployment(  # an upstream removed from the store since
        DeploymentRecord("orphan", "m", "1", 10, "Standard", now, upstreams=("gone",))
    )
    answers = []
    for _ in range(40):  # the health check (every 0.2 s here) cools the dead upstream
        answers.append(probe.get("/readyz"))
        if "remote" in answers[-1].json().get("deployments", {}):
            break
        time.sleep(0.1)
    assert answers[-1].status_code == 503, answers[-1].text
    body = answers[-1].json()
    assert body["checks"]["deployments"] == "2 of 6 deployments unusable"
    assert "cooling down" in body["deployments"]["remote"]
    assert "has no registered upstream (gone)" in body["deployments"]["orphan"]
    assert set(body["deployments"]) == {"remote", "orphan"}


def _refused_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What the server logged about the outage: its INFO-and-above lines but the access lines
    (one per request by design, docs/configuration.md#logs-and-metrics)."""
    return [
        r
        for r in records
        if r.name.startswith("cerulean")
        and r.name != "cerulean.access"
        and r.levelno >= logging.INFO
    ]


def test_redis_outage_is_logged_once_and_the_first_burst_after_it_succeeds(
    tmp_path: Path, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, redis_url=private_redis.url)
    app = create_app(settings, {"fake-model": FakeEngine()})

    async def burst(base: str, count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=base, headers={"api-key": KEY1}, timeout=30
        ) as client:
            return await asyncio.gather(*(client.post(CHAT, json=ASK) for _ in range(count)))

    caplog.set_level(logging.DEBUG, logger="cerulean")
    with live_server(app, settings) as base:
        assert [r.status_code for r in asyncio.run(burst(base, 60))] == [200] * 60
        private_redis.stop()
        caplog.clear()
        refused = asyncio.run(burst(base, 100))
        assert {r.status_code for r in refused} == {503}
        assert refused[0].json()["error"]["code"] == "ServiceUnavailable"
        assert "retry-after" in refused[0].headers
        during = _refused_lines(caplog.records)
        assert len(during) == 1, [r.getMessage() for r in during]
        assert during[0].levelno == logging.WARNING and during[0].exc_info is None
        assert "unreachable" in during[0].getMessage()
        private_redis.start()
        caplog.clear()
        after = asyncio.run(burst(base, 60))
        assert [r.status_code for r in after] == [200] * 60  # no stale connection fails
        back = [r.getMessage() for r in _refused_lines(caplog.records)]
        assert len(back) == 1 and "reachable again" in back[0], back
        # A restart nobody saw: every pooled connection is stale, none may cost a 503.
        private_redis.stop()
        private_redis.start()
        assert [r.status_code for r in asyncio.run(burst(base, 60))] == [200] * 60


def test_failing_open_limits_each_process_during_an_outage(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    settings = _settings(tmp_path, redis_url=private_redis.url, redis_outage="open")
    app = create_app(settings, {"fake-model": FakeEngine()})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["api-key"] = KEY1
        private_redis.stop()
        answer = client.post(CHAT, json=ASK)
        assert answer.status_code == 200, answer.text
        assert "x-ratelimit-remaining-tokens" in answer.headers
