"""The SQL store on SQLite and on the real PostgreSQL: records, migrations, adopting old homes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cerulean.store import DeploymentRecord, SqlStore
from cerulean.store.base import ModelRecord, ResponseRecord, UsageRecord
from cerulean.store.migrate import current_revision, head_revision, upgrade
from cerulean.store.sql import create_store_engine, deployments, metadata, models, normalize_url
from tests.store.legacy import NOW, legacy_home


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a schema of its own in the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cerulean.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    opened = SqlStore(db_url)
    yield opened
    opened.close()


def deployment(name: str, capacity: int = 120) -> DeploymentRecord:
    return DeploymentRecord(
        name=name, model="m", version="1", capacity=capacity, sku="Standard", created_at=NOW
    )


def test_normalize_url_picks_psycopg() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_keys(store: SqlStore) -> None:
    store.set_key_digest("key1", "sha256:aa")
    store.set_key_digest("key2", "sha256:bb")
    store.set_key_digest("key1", "sha256:cc")
    assert store.key_digests() == {"key1": "sha256:cc", "key2": "sha256:bb"}


def test_role_assignments_and_account_properties(store: SqlStore) -> None:
    assert store.add_role_assignment("p1", "r1")
    assert not store.add_role_assignment("p1", "r1")  # already held
    assert store.add_role_assignment("p1", "r2") and store.add_role_assignment("p0", "r1")
    held = [(r.principal_id, r.role_id) for r in store.list_role_assignments()]
    assert held == [("p0", "r1"), ("p1", "r1"), ("p1", "r2")]
    assert store.remove_role_assignment("p1", "r1")
    assert not store.remove_role_assignment("p1", "r1")
    assert store.account_properties() == {}
    store.set_account_property("disableLocalAuth", "true")
    store.set_account_property("disableLocalAuth", "false")
    assert store.account_properties() == {"disableLocalAuth": "false"}


def test_deployments(store: SqlStore) -> None:
    store.put_deployment(deployment("b"))
    store.put_deployment(deployment("a", capacity=1))
    store.put_deployment(deployment("b", capacity=7))
    assert [d.name for d in store.list_deployments()] == ["a", "b"]
    got = store.get_deployment("b")
    assert got == deployment("b", capacity=7) and got.created_at.tzinfo is not None
    assert store.delete_deployment("a") and not store.delete_deployment("a")
    assert store.get_deployment("a") is None


def test_models(store: SqlStore) -> None:
    record = ModelRecord(
        name="qwen2.5-0.5b-instruct",
        path="/models/qwen.gguf",
        capabilities=("chat", "completions"),
        context_length=32768,
        chat_template="{{ messages }}",
        created_at=NOW,
    )
    store.put_model(record)
    store.put_model(
        ModelRecord("embedded", None, ("embeddings",), None, None, NOW - timedelta(days=1))
    )
    assert store.get_model("qwen2.5-0.5b-instruct") == record
    assert [m.name for m in store.list_models()] == ["embedded", "qwen2.5-0.5b-instruct"]
    assert store.delete_model("embedded") and store.get_model("embedded") is None


def test_usage_adds_up_per_minute(store: SqlStore) -> None:
    minute = NOW.replace(second=0, microsecond=0)
    later = minute + timedelta(minutes=1)
    store.add_usage(
        [
            UsageRecord(NOW, "d", "key1", "chat_completion", 200, 1, 10, 5, 0, 0.5, 1, 1.0, 1.0),
            UsageRecord(later, "d", "key1", "chat_completion", 200, 1, 0, 3, 0, 0.0, 0, 0.2, 0.2),
            UsageRecord(NOW, "other", "key2", "embeddings", 200, 9),
        ]
    )
    store.add_usage(  # a second batch adds to the same minute; the max stays the max
        [
            UsageRecord(
                NOW + timedelta(seconds=30),
                "d",
                "key1",
                "chat_completion",
                200,
                1,
                20,
                0,
                0,
                0.25,
                1,
                3.0,
                3.0,
            ),
            UsageRecord(NOW, "d", "key2", "chat_completion", 429, 2, 0, 0, 2, 0, 0, 0.01, 0.01),
        ]
    )
    rows = store.usage(NOW - timedelta(minutes=5), deployment="d")
    assert rows == [
        UsageRecord(minute, "d", "key1", "chat_completion", 200, 2, 30, 5, 0, 0.75, 2, 4.0, 3.0),
        UsageRecord(minute, "d", "key2", "chat_completion", 429, 2, 0, 0, 2, 0.0, 0, 0.01, 0.01),
        UsageRecord(later, "d", "key1", "chat_completion", 200, 1, 0, 3, 0, 0.0, 0, 0.2, 0.2),
    ]
    assert rows[0].minute.tzinfo is not None
    assert len(store.usage(NOW + timedelta(seconds=50), deployment="d")) == 1
    assert [r.deployment for r in store.usage(NOW, caller="key2")] == ["d", "other"]
    assert store.usage(NOW, until=later, deployment="d", caller="key1")[0].requests == 2
    assert store.prune_usage(later) == 3
    assert [r.minute for r in store.usage(NOW - timedelta(days=1))] == [later]


def test_migration_0010_keeps_the_old_usage_rows(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        upgrade(engine, "0005")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO usage (deployment, minute, requests, prompt_tokens, "
                    "completion_tokens, throttled) VALUES ('d', :m, 3, 30, 7, 1)"
                ),
                {"m": NOW.replace(second=0, microsecond=0)},
            )
    finally:
        engine.dispose()
    store = SqlStore(db_url)
    try:
        (row,) = store.usage(NOW - timedelta(hours=1))
    finally:
        store.close()
    assert (row.deployment, row.caller, row.status, row.requests) == ("d", "", 200, 3)
    assert (row.prompt_tokens, row.completion_tokens, row.throttled) == (30, 7, 1)


def test_schema_is_the_migrations_and_matches_the_tables(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        assert current_revision(conn) == head_revision() == "0007"
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_reopening_keeps_everything(db_url: str) -> None:
    first = SqlStore(db_url)
    first.put_deployment(deployment("kept"))
    first.close()
    again = SqlStore(db_url)
    try:
        assert again.get_deployment("kept") == deployment("kept")
    finally:
        again.close()


def test_stores_opening_at_once_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[SqlStore] = []

    def open_store() -> None:
        try:
            opened.append(SqlStore(db_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == [] and len(opened) == 4
        opened[0].put_deployment(deployment("shared"))
        assert opened[3].get_deployment("shared") is not None
    finally:
        for store in opened:
            store.close()


def test_a_home_from_before_migrations_is_adopted(db_url: str) -> None:
    legacy_home(db_url)
    store = SqlStore(db_url)
    try:
        assert store.key_digests() == {"key1": "sha256:old"}
        assert store.get_deployment("gpt-4") == DeploymentRecord(
            "gpt-4", "m", "1", 100_000, "Standard", NOW, builtin=True
        )
        assert "gpt-4" in store.seeded_names()
        with store.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert {"models", "usage"} <= set(inspect(conn).get_table_names())
        store.put_model(ModelRecord("x", None, ("chat",), 8192, None, NOW))
        assert store.get_model("x") is not None
    finally:
        store.close()


def test_migration_0003_repairs_the_old_capability_names(db_url: str) -> None:
    """Stores written before one vocabulary (issue 10) held ``chat,completions`` from the CLI;
    revision 0003 rewrites them, and leaves the other names as they are."""
    engine = create_store_engine(db_url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            for name, capabilities in (
                ("old", "chat,completions"),
                ("new", "chat_completion,completion"),
                ("emb", "embeddings"),
            ):
                conn.execute(
                    models.insert().values(
                        name=name, path=None, capabilities=capabilities, created_at=NOW
                    )
                )
    finally:
        engine.dispose()
    store = SqlStore(db_url)
    try:
        found = {m.name: m.capabilities for m in store.list_models()}
    finally:
        store.close()
    assert found == {
        "old": ("chat_completion", "completion"),
        "new": ("chat_completion", "completion"),
        "emb": ("embeddings",),
    }


def test_migration_0005_marks_built_ins_and_keeps_a_users_choice(db_url: str) -> None:
    """Built-in names bound to a registered GGUF were a user's choice: not ``builtin``."""
    engine = create_store_engine(db_url)
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(
                models.insert().values(
                    name="mine", path="/m/mine.gguf", capabilities="chat_completion", created_at=NOW
                )
            )
            for name, model in (("gpt-4", "mine"), ("gpt-35-turbo", "gemma-3-270m"), ("x1", "m")):
                conn.execute(
                    deployments.insert().values(
                        name=name,
                        model=model,
                        version="1",
                        capacity=1,
                        sku="Standard",
                        created_at=NOW,
                    )
                )
    finally:
        engine.dispose()
    store = SqlStore(db_url)
    try:
        assert store.get_deployment("gpt-4").builtin is False  # type: ignore[union-attr]
        assert store.get_deployment("gpt-35-turbo").builtin is True  # type: ignore[union-attr]
        assert store.get_deployment("x1").builtin is False  # type: ignore[union-attr]
        assert store.seeded_names() == {"gpt-4", "gpt-35-turbo"}
    finally:
        store.close()


def _response(
    response_id: str, status: str, expires: datetime, runner: str | None = None
) -> ResponseRecord:  # a heartbeat at NOW when it has a runner
    return ResponseRecord(
        id=response_id,
        deployment="gpt-4",
        status=status,
        created_at=NOW,
        expires_at=expires,
        body=json.dumps({"id": response_id}),
        input_items="[]",
        conversation="[]",
        events=None,
        runner=runner,
        heartbeat=NOW if runner else None,
    )


def test_responses_expire_purge_and_delete(store: SqlStore) -> None:
    later = NOW + timedelta(days=30)
    store.put_response(_response("resp_a", "completed", later))
    store.put_response(_response("resp_old", "completed", NOW + timedelta(seconds=1)))
    store.put_response(_response("resp_bg", "in_progress", later, runner="me"))
    assert store.get_response("resp_a", NOW) == _response("resp_a", "completed", later)
    # Expired: invisible at once, deleted by the purge.
    assert store.get_response("resp_old", NOW + timedelta(seconds=2)) is None
    assert store.purge_responses(NOW + timedelta(seconds=2)) == 1
    assert store.get_response("resp_old", NOW) is None
    soon = NOW + timedelta(seconds=30)
    assert [r.id for r in store.stale_responses(soon)] == ["resp_bg"]
    assert store.touch_responses("someone else", soon) == 0
    assert store.touch_responses("me", soon) == 1
    assert store.stale_responses(soon) == []
    beaten = store.get_response("resp_bg", NOW)
    assert beaten is not None and beaten.heartbeat == soon
    store.put_response(_response("resp_bg", "completed", later, runner="me"))
    assert store.stale_responses(later) == []
    assert store.delete_response("resp_a") is True
    assert store.delete_response("resp_a") is False
    assert store.get_response("resp_a", NOW) is None
