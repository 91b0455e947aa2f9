"""Shared fixtures: a clean environment, settings in a temporary home, the in-process app."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings

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
