"""The app on PostgreSQL (``CERULEAN_DATABASE_URL``) works as it does on SQLite."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from cerulean.store.sql import SqlStore

URL = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
BODY = {"messages": [{"role": "user", "content": "hello there"}]}


def test_serves_from_postgresql_and_keeps_state(tmp_path: Path, postgres_schema_url: str) -> None:
    settings = Settings(home=tmp_path / "home", database_url=postgres_schema_url)
    assert settings.store_url == postgres_schema_url
    generated: dict[str, str] = {}
    for run in range(2):
        app = create_app(settings, {"fake-model": FakeEngine()})
        with TestClient(app, raise_server_exceptions=False) as client:
            state = app.state.cerulean
            if run == 0:
                generated = dict(state.shown_keys)
                assert set(generated) == {"key1", "key2"}
            client.headers["api-key"] = generated["key2"]
            response = client.post(URL, json=BODY)
            assert response.status_code == 200, response.text
            assert isinstance(state.store, SqlStore)
            assert state.store.engine.dialect.name == "postgresql"
    # Nothing was written to the data directory's SQLite file.
    assert not (tmp_path / "home" / "cerulean.db").exists()
