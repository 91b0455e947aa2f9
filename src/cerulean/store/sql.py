"""SQLAlchemy implementation of :class:`~cerulean.store.base.Store` (SQLite by default)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from cerulean.store.base import DeploymentRecord

__all__ = ["SqlStore", "metadata"]

metadata = MetaData()

account_keys = Table(
    "account_keys",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("digest", String(128), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("model", String(256), nullable=False),
    Column("version", String(64), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("sku", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL keeps readers going during writes; FULL sync makes every commit durable, so a kill -9
    # (or a power cut) never loses a key or a deployment that was reported as saved.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SqlStore:
    """Keys and deployments in a SQL database."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url, future=True)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        metadata.create_all(self._engine)

    def key_digests(self) -> dict[str, str]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(account_keys.c.name, account_keys.c.digest)).all()
        return {name: digest for name, digest in rows}

    def set_key_digest(self, name: str, digest: str) -> None:
        values = {"name": name, "digest": digest, "updated_at": datetime.now(timezone.utc)}
        self._upsert(account_keys, values, "name")

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(deployments).where(deployments.c.name == name)).first()
        return None if row is None else self._record(row._mapping)

    def list_deployments(self) -> list[DeploymentRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(deployments).order_by(deployments.c.name)).all()
        return [self._record(row._mapping) for row in rows]

    def put_deployment(self, record: DeploymentRecord) -> None:
        values = {
            "name": record.name,
            "model": record.model,
            "version": record.version,
            "capacity": record.capacity,
            "sku": record.sku,
            "created_at": record.created_at,
        }
        self._upsert(deployments, values, "name")

    def close(self) -> None:
        self._engine.dispose()

    def _upsert(self, table: Table, values: dict[str, Any], key: str) -> None:
        with self._engine.begin() as conn:
            if self._engine.dialect.name == "sqlite":
                stmt = sqlite_insert(table).values(**values)
                update = {k: v for k, v in values.items() if k != key}
                conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update))
                return
            existing = conn.execute(select(table).where(table.c[key] == values[key])).first()
            if existing is None:
                conn.execute(table.insert().values(**values))
            else:
                conn.execute(table.update().where(table.c[key] == values[key]).values(**values))

    @staticmethod
    def _record(row: Any) -> DeploymentRecord:
        return DeploymentRecord(
            name=row["name"],
            model=row["model"],
            version=row["version"],
            capacity=row["capacity"],
            sku=row["sku"],
            created_at=_aware(row["created_at"]),
        )
