"""A data directory made before migrations existed is upgraded in place by a real server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from cerulean.services.auth import hash_key
from cerulean.store.migrate import head_revision
from tests.e2e.conftest import Server
from tests.store.legacy import NOW, legacy_home

pytestmark = pytest.mark.slow

OLD_KEY = "0123456789abcdef" * 2
URL = "openai/deployments/gpt-4/chat/completions?api-version=2024-02-01"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_server_adopts_a_pre_migration_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    database = home / "cerulean.db"
    legacy_home(f"sqlite:///{database}")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE account_keys SET digest = ?", (hash_key(OLD_KEY),))
        db.execute(
            "INSERT INTO deployments VALUES ('mine', 'gemma', '1', 7, 'Standard', ?)",
            (NOW.isoformat(sep=" "),),
        )
        assert "alembic_version" not in {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    server = Server(home=home).start()
    try:
        response = httpx.post(
            server.endpoint + URL, json=BODY, headers={"api-key": OLD_KEY}, timeout=60
        )
        # The key stored by the old version still opens the door.
        assert response.status_code == 200, response.text
    finally:
        server.stop()
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        capacities = dict(db.execute("SELECT name, capacity FROM deployments"))
    assert {"alembic_version", "models", "usage"} <= tables
    assert version == head_revision()
    assert capacities == {
        "gpt-35-turbo": 100_000,
        "gpt-4": 100_000,
        "text-embedding-ada-002": 100_000,
        "mine": 7,
        # the names added in issue 13, seeded on the first start after the upgrade
        "gpt-4o": 100_000,
        "gpt-4o-mini": 100_000,
        "text-embedding-3-small": 100_000,
    }
