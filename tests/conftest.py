"""Shared fixtures: a clean environment, settings in a temporary home, the in-process app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings

# Read before `clean_env` empties CERULEAN_* for each test. Set explicitly (as .ci/run does) or
# under CI, an unreachable service fails the tests that need it; otherwise they skip.
_REDIS_URL = os.environ.get("CERULEAN_TEST_REDIS_URL")
_POSTGRES_URL = os.environ.get("CERULEAN_TEST_POSTGRES_URL")
_STRICT_SERVICES = bool(os.environ.get("CI"))
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

KEY1 = "0123456789abcdef0123456789abcdef"
KEY2 = "fedcba9876543210fedcba9876543210"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CERULEAN_*, AZURE_* or OPENAI_* variables leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("CERULEAN_", "AZURE_OPENAI", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", key1=KEY1, key2=KEY2)  # type: ignore[arg-type]


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(settings: Settings, fake_engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(settings, {"fake-model": fake_engine})
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["api-key"] = KEY1
        yield test_client


def _service(explicit: str | None, default: str, name: str, probe: Callable[[str], None]) -> str:
    url = explicit or default
    try:
        probe(url)
    except Exception as exc:
        message = f"{name} at {url} is unreachable ({exc.__class__.__name__}: {exc})"
        if explicit or _STRICT_SERVICES:
            pytest.fail(message)
        pytest.skip(f"{message}; set CERULEAN_TEST_{name.upper()}_URL to run these tests")
    return url


def _ping_redis(url: str) -> None:
    from redis import Redis

    with Redis.from_url(url, socket_connect_timeout=2) as client:
        client.ping()


def _ping_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from cerulean.store.sql import normalize_url

    engine = create_engine(normalize_url(url), connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the tests share (each test uses its own key prefix)."""
    return _service(_REDIS_URL, DEFAULT_REDIS_URL, "redis", _ping_redis)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real PostgreSQL the tests share (each test uses its own schema)."""
    return _service(_POSTGRES_URL, DEFAULT_POSTGRES_URL, "postgres", _ping_postgres)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL of the real PostgreSQL whose search path is a fresh schema, dropped afterwards."""
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    from cerulean.store.sql import normalize_url

    schema = f"cerulean_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(postgres_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
