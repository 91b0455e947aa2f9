"""A database as Cerulean made it before migrations existed (``metadata.create_all``)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine

from cerulean.store.sql import normalize_url

NOW = datetime(2026, 11, 26, 9, 30, 12, tzinfo=timezone.utc)


def legacy_home(url: str) -> None:
    """A database exactly as Cerulean made it before migrations: `create_all`, with rows."""
    legacy = MetaData()
    keys = Table(
        "account_keys",
        legacy,
        Column("name", String(16), primary_key=True),
        Column("digest", String(128), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    deployments = Table(
        "deployments",
        legacy,
        Column("name", String(64), primary_key=True),
        Column("model", String(256), nullable=False),
        Column("version", String(64), nullable=False),
        Column("capacity", Integer, nullable=False),
        Column("sku", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    engine = create_engine(normalize_url(url))
    legacy.create_all(engine)
    with engine.begin() as conn:
        conn.execute(keys.insert().values(name="key1", digest="sha256:old", updated_at=NOW))
        conn.execute(
            deployments.insert().values(
                name="gpt-4",
                model="m",
                version="1",
                capacity=100_000,
                sku="Standard",
                created_at=NOW,
            )
        )
    engine.dispose()
