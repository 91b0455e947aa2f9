"""SQLAlchemy implementation of :class:`~cerulean.store.base.Store`: SQLite by default, or
PostgreSQL (psycopg 3). The schema comes from the Alembic migrations in ``migrations/``, applied
when the store opens (:func:`cerulean.store.migrate.upgrade`); the tables below mirror them for
queries, and a test checks the two agree.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url

from cerulean.store.base import (
    BlocklistItemRecord,
    BlocklistRecord,
    DeploymentRecord,
    ModelRecord,
    RaiPolicyRecord,
    ResponseRecord,
    RoleAssignmentRecord,
    UpstreamRecord,
    UsageRecord,
)

__all__ = ["SqlStore", "create_store_engine", "metadata", "normalize_url"]

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
    Column("upstreams", Text, nullable=True),  # comma-separated upstream names (migration 0004)
    Column("builtin", Boolean, nullable=False, server_default=false()),  # migration 0005
    Column("rai_policy", String(128), nullable=True),  # migration 0008
)

rai_policies = Table(
    "rai_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("properties", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

rai_blocklists = Table(
    "rai_blocklists",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("description", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

rai_blocklist_items = Table(
    "rai_blocklist_items",
    metadata,
    Column(
        "blocklist",
        String(128),
        ForeignKey("rai_blocklists.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column("pattern", Text, nullable=False),
    Column("is_regex", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

seeded = Table(
    "seeded",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seeded_at", DateTime(timezone=True), nullable=False),
)

upstreams = Table(
    "upstreams",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("model", String(256), nullable=True),
    Column("api_key_env", String(128), nullable=True),
    Column("api_key_file", Text, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("weight", Float, nullable=False),
    Column("profile", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("path", Text, nullable=True),
    Column("capabilities", String(128), nullable=False),
    Column("context_length", Integer, nullable=True),
    Column("chat_template", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

usage = Table(  # migration 0010: one row per minute, deployment, caller, operation and status
    "usage",
    metadata,
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("deployment", String(64), primary_key=True),
    Column("caller", String(128), primary_key=True),
    Column("operation", String(32), primary_key=True),
    Column("status", Integer, primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("throttled", Integer, nullable=False),
    Column("ttft_sum", Float, nullable=False),
    Column("ttft_count", Integer, nullable=False),
    Column("duration_sum", Float, nullable=False),
    Column("duration_max", Float, nullable=False),
)

# Files and batch jobs (migration 0007; queried by :mod:`cerulean.store.batches`).
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("status_details", Text, nullable=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("input_file_id", String(64), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("api_version", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("deployment", String(64), nullable=True),
    Column("metadata", Text, nullable=True),
    Column("errors", Text, nullable=True),
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("output_expires_after", BigInteger, nullable=True),
    Column("enqueued_tokens", BigInteger, nullable=False),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger, nullable=True),
    Column("finalizing_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("failed_at", BigInteger, nullable=True),
    Column("expired_at", BigInteger, nullable=True),
    Column("cancelling_at", BigInteger, nullable=True),
    Column("cancelled_at", BigInteger, nullable=True),
    Column("lease_owner", String(96), nullable=True),
    Column("lease_until", Float, nullable=True),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("done", Boolean, nullable=False),
    Column("is_error", Boolean, nullable=False),
    Column("result", Text, nullable=True),
    Column("lease_owner", String(96), nullable=True),
    Column("lease_until", Float, nullable=True),
    Index("ix_batch_lines_pending", "batch_id", "done"),
)

responses = Table(  # migration 0006
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("deployment", String(64), nullable=False),
    Column("status", String(16), nullable=False, index=True),  # the upkeep's stale-run query
    Column("runner", String(256), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("body", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("conversation", Text, nullable=False),
    Column("events", Text, nullable=True),
    Column("heartbeat", DateTime(timezone=True), nullable=True),
)

_RUNNING = ("queued", "in_progress")

role_assignments = Table(  # migration 0009
    "role_assignments",
    metadata,
    Column("principal_id", String(128), primary_key=True),
    Column("role_id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

account_properties = Table(  # migration 0009
    "account_properties",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_USAGE_KEY = ("minute", "deployment", "caller", "operation", "status")
_USAGE_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "throttled",
    "ttft_sum",
    "ttft_count",
    "duration_sum",
)


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs name psycopg 3 explicitly (SQLAlchemy would
    otherwise pick psycopg2, which Cerulean does not install)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is turned off so that SQLAlchemy's BEGIN (below)
    # covers DDL too: a migration then runs in one transaction (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    # WAL keeps readers going during writes; FULL sync makes every commit durable, so a kill -9
    # (or a power cut) never loses a key or a deployment that was reported as saved.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _set_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _set_wal(cursor: Any) -> None:
    """Switch to WAL, retrying while another connection holds the lock.

    SQLite answers a journal-mode change that meets a lock with "database is locked" at once,
    without calling its busy handler, so processes opening a new database together would fail;
    they retry here for up to 30 s (no library wraps this).
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin(conn: Connection) -> None:
    # Migrations take the write lock up front, so two processes starting at once take turns.
    exclusive = conn.get_execution_options().get("cerulean_write_lock", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if exclusive else "BEGIN")


def create_store_engine(url: str) -> Engine:
    """An engine for ``url`` (SQLite set up for durability, PostgreSQL through psycopg 3)."""
    engine = create_engine(normalize_url(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SqlStore:
    """Keys, deployments, models and usage in a SQL database, migrated to the latest schema."""

    # Counted over every SqlStore of the process (the CLI's and the tests' own stores write
    # the same database as the server's), for the serving pool's deployment cache.
    _deployment_writes: ClassVar[int] = 0

    def __init__(self, url: str) -> None:
        # Imported here: Alembic is needed only when a store opens.
        from cerulean.store.migrate import upgrade

        self._engine: Engine = create_store_engine(url)
        upgrade(self._engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools and tests)."""
        return self._engine

    def key_digests(self) -> dict[str, str]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(account_keys.c.name, account_keys.c.digest)).all()
        return {name: digest for name, digest in rows}

    def set_key_digest(self, name: str, digest: str) -> None:
        values = {"name": name, "digest": digest, "updated_at": datetime.now(timezone.utc)}
        self._upsert(account_keys, values)

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        # Case-insensitive, as Azure's resource names are; the exact spelling wins when a store
        # written before names were folded holds several.
        same = func.lower(deployments.c.name) == name.lower()
        with self._engine.connect() as conn:
            rows = conn.execute(select(deployments).where(same)).all()
        exact = [row for row in rows if row.name == name]
        chosen = exact or rows
        return _deployment(chosen[0]._mapping) if chosen else None

    @property
    def deployment_writes(self) -> int:
        return SqlStore._deployment_writes

    def list_deployments(self) -> list[DeploymentRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(deployments).order_by(deployments.c.name)).all()
        return [_deployment(row._mapping) for row in rows]

    def put_deployment(self, record: DeploymentRecord) -> None:
        values = {
            "name": record.name,
            "model": record.model,
            "version": record.version,
            "capacity": record.capacity,
            "sku": record.sku,
            "created_at": record.created_at,
            "upstreams": ",".join(record.upstreams) or None,
            "builtin": record.builtin,
            "rai_policy": record.rai_policy,
        }
        self._upsert(deployments, values)
        SqlStore._deployment_writes += 1

    def seeded_names(self) -> set[str]:
        with self._engine.connect() as conn:
            return {row[0] for row in conn.execute(select(seeded.c.name)).all()}

    def mark_seeded(self, name: str) -> None:
        self._upsert(seeded, {"name": name, "seeded_at": datetime.now(timezone.utc)})

    def delete_deployment(self, name: str) -> bool:
        same = func.lower(deployments.c.name) == name.lower()
        with self._engine.begin() as conn:
            result = conn.execute(delete(deployments).where(same))
        SqlStore._deployment_writes += 1
        return bool(result.rowcount)

    def get_upstream(self, name: str) -> UpstreamRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(upstreams).where(upstreams.c.name == name)).first()
        return None if row is None else _upstream(row._mapping)

    def list_upstreams(self) -> list[UpstreamRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(upstreams).order_by(upstreams.c.name)).all()
        return [_upstream(row._mapping) for row in rows]

    def put_upstream(self, record: UpstreamRecord) -> None:
        values = {
            "name": record.name,
            "url": record.url,
            "flavor": record.flavor,
            "model": record.model,
            "api_key_env": record.api_key_env,
            "api_key_file": record.api_key_file,
            "max_concurrency": record.max_concurrency,
            "weight": record.weight,
            "profile": record.profile,
            "created_at": record.created_at,
        }
        self._upsert(upstreams, values)

    def delete_upstream(self, name: str) -> bool:
        return self._delete(upstreams, name)

    def get_model(self, name: str) -> ModelRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(models).where(models.c.name == name)).first()
        return None if row is None else _model(row._mapping)

    def list_models(self) -> list[ModelRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(models).order_by(models.c.name)).all()
        return [_model(row._mapping) for row in rows]

    def put_model(self, record: ModelRecord) -> None:
        values = {
            "name": record.name,
            "path": record.path,
            "capabilities": ",".join(record.capabilities),
            "context_length": record.context_length,
            "chat_template": record.chat_template,
            "created_at": record.created_at,
        }
        self._upsert(models, values)

    def delete_model(self, name: str) -> bool:
        return self._delete(models, name)

    def add_usage(self, rows: Sequence[UsageRecord]) -> None:
        if not rows:
            return
        values = [_usage_values(row) for row in rows]
        with self._engine.begin() as conn:
            conn.execute(self._usage_upsert, values)

    @cached_property
    def _usage_upsert(self) -> Any:
        """The usage rows' upsert (adds to a minute's sums), built once: building it (the
        ``excluded`` columns) costs more CPU than running it, once a second."""
        stmt = self._insert(usage)
        added: dict[str, Any] = {name: usage.c[name] + stmt.excluded[name] for name in _USAGE_SUMS}
        added["duration_max"] = case(
            (usage.c.duration_max > stmt.excluded.duration_max, usage.c.duration_max),
            else_=stmt.excluded.duration_max,
        )
        return stmt.on_conflict_do_update(index_elements=list(_USAGE_KEY), set_=added)

    def usage(
        self,
        since: datetime,
        *,
        until: datetime | None = None,
        deployment: str | None = None,
        caller: str | None = None,
    ) -> list[UsageRecord]:
        query = select(usage).where(usage.c.minute >= _minute(since))
        if until is not None:
            query = query.where(usage.c.minute < until.astimezone(timezone.utc))
        if deployment is not None:
            query = query.where(usage.c.deployment == deployment)
        if caller is not None:
            query = query.where(usage.c.caller == caller)
        query = query.order_by(*(usage.c[name] for name in _USAGE_KEY))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_usage(row._mapping) for row in rows]

    def get_rai_policy(self, name: str) -> RaiPolicyRecord | None:
        row = self._named(rai_policies, name)
        return None if row is None else RaiPolicyRecord(**_dated(row))

    def list_rai_policies(self) -> list[RaiPolicyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(rai_policies).order_by(rai_policies.c.name)).all()
        return [RaiPolicyRecord(**_dated(row._mapping)) for row in rows]

    def put_rai_policy(self, record: RaiPolicyRecord) -> None:
        self._upsert(rai_policies, dict(vars(record)))

    def delete_rai_policy(self, name: str) -> bool:
        with self._engine.begin() as conn:
            same = func.lower(rai_policies.c.name) == name.lower()
            return bool(conn.execute(delete(rai_policies).where(same)).rowcount)

    def get_blocklist(self, name: str) -> BlocklistRecord | None:
        row = self._named(rai_blocklists, name)
        return None if row is None else BlocklistRecord(**_dated(row))

    def list_blocklists(self) -> list[BlocklistRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(rai_blocklists).order_by(rai_blocklists.c.name)).all()
        return [BlocklistRecord(**_dated(row._mapping)) for row in rows]

    def put_blocklist(self, record: BlocklistRecord) -> None:
        self._upsert(rai_blocklists, dict(vars(record)))

    def delete_blocklist(self, name: str) -> bool:
        items = rai_blocklist_items.c
        with self._engine.begin() as conn:  # SQLite enforces no foreign keys here: by hand
            conn.execute(delete(rai_blocklist_items).where(items.blocklist == name))
            return bool(
                conn.execute(delete(rai_blocklists).where(rai_blocklists.c.name == name)).rowcount
            )

    def list_blocklist_items(self, blocklist: str) -> list[BlocklistItemRecord]:
        items = rai_blocklist_items.c
        query = select(rai_blocklist_items).where(items.blocklist == blocklist)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(items.name)).all()
        return [_item(row._mapping) for row in rows]

    def put_blocklist_item(self, record: BlocklistItemRecord) -> None:
        self._upsert(rai_blocklist_items, dict(vars(record)))

    def delete_blocklist_item(self, blocklist: str, name: str) -> bool:
        items = rai_blocklist_items.c
        where = (items.blocklist == blocklist) & (items.name == name)
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(rai_blocklist_items).where(where)).rowcount)

    def put_response(self, record: ResponseRecord) -> None:
        values = {
            "id": record.id,
            "deployment": record.deployment,
            "status": record.status,
            "runner": record.runner,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "body": record.body,
            "input_items": record.input_items,
            "conversation": record.conversation,
            "events": record.events,
            "heartbeat": record.heartbeat,
        }
        self._upsert(responses, values)

    def get_response(self, response_id: str, now: datetime) -> ResponseRecord | None:
        query = select(responses).where(responses.c.id == response_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or _aware(row.expires_at) <= now:
            return None
        return _response(row._mapping)

    def delete_response(self, response_id: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(delete(responses).where(responses.c.id == response_id))
        return bool(result.rowcount)

    def purge_responses(self, now: datetime) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(delete(responses).where(responses.c.expires_at <= now))
        return int(result.rowcount or 0)

    def touch_responses(self, runner: str, now: datetime) -> int:
        running = responses.c.status.in_(_RUNNING)
        query = responses.update().where(responses.c.runner == runner, running)
        with self._engine.begin() as conn:
            result = conn.execute(query.values(heartbeat=now))
        return int(result.rowcount or 0)

    def stale_responses(self, before: datetime) -> list[ResponseRecord]:
        query = select(responses).where(
            responses.c.status.in_(_RUNNING), responses.c.heartbeat < before
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_response(row._mapping) for row in rows]

    def list_role_assignments(self) -> list[RoleAssignmentRecord]:
        query = select(role_assignments).order_by(
            role_assignments.c.principal_id, role_assignments.c.role_id
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            RoleAssignmentRecord(row.principal_id, row.role_id, _aware(row.created_at))
            for row in rows
        ]

    def add_role_assignment(self, principal_id: str, role_id: str) -> bool:
        values = {
            "principal_id": principal_id,
            "role_id": role_id,
            "created_at": datetime.now(timezone.utc),
        }
        stmt = (
            self._insert(role_assignments)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(role_assignments.c.principal_id)  # rowcount is -1 for psycopg here
        )
        with self._engine.begin() as conn:
            return conn.execute(stmt).first() is not None

    def remove_role_assignment(self, principal_id: str, role_id: str) -> bool:
        where = (role_assignments.c.principal_id == principal_id) & (
            role_assignments.c.role_id == role_id
        )
        with self._engine.begin() as conn:
            result = conn.execute(delete(role_assignments).where(where))
        return bool(result.rowcount)

    def account_properties(self) -> dict[str, str]:
        query = select(account_properties.c.name, account_properties.c.value)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {name: value for name, value in rows}

    def set_account_property(self, name: str, value: str) -> None:
        values = {"name": name, "value": value, "updated_at": datetime.now(timezone.utc)}
        self._upsert(account_properties, values)

    def prune_usage(self, before: datetime) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(delete(usage).where(usage.c.minute < _minute(before)))
        return int(result.rowcount or 0)

    def close(self) -> None:
        self._engine.dispose()

    def _named(self, table: Table, name: str) -> Any:
        """The row of ``table`` named ``name``, case-insensitively (exact spelling first)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(table).where(func.lower(table.c.name) == name.lower()))
            found = [row._mapping for row in rows.all()]
        exact = [row for row in found if row["name"] == name]
        chosen = exact or found
        return chosen[0] if chosen else None

    def _insert(self, table: Table) -> Any:
        # Both dialects spell an upsert ON CONFLICT; each has its own insert construct.
        dialect = self._engine.dialect.name
        return postgresql_insert(table) if dialect == "postgresql" else sqlite_insert(table)

    def _upsert(self, table: Table, values: dict[str, Any]) -> None:
        key = [column.name for column in table.primary_key]
        stmt = self._insert(table).values(**values)
        update = {k: v for k, v in values.items() if k not in key}
        with self._engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=update))

    def _delete(self, table: Table, name: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(delete(table).where(table.c.name == name))
        return bool(result.rowcount)


def _deployment(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        name=row["name"],
        model=row["model"],
        version=row["version"],
        capacity=row["capacity"],
        sku=row["sku"],
        created_at=_aware(row["created_at"]),
        upstreams=tuple(n for n in (row["upstreams"] or "").split(",") if n),
        builtin=bool(row["builtin"]),
        rai_policy=row["rai_policy"],
    )


def _dated(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "updated_at"):
        out[key] = _aware(out[key])
    return out


def _item(row: Any) -> BlocklistItemRecord:
    return BlocklistItemRecord(
        blocklist=row["blocklist"],
        name=row["name"],
        pattern=row["pattern"],
        is_regex=bool(row["is_regex"]),
        created_at=_aware(row["created_at"]),
    )


def _upstream(row: Any) -> UpstreamRecord:
    return UpstreamRecord(
        name=row["name"],
        url=row["url"],
        flavor=row["flavor"],
        model=row["model"],
        api_key_env=row["api_key_env"],
        api_key_file=row["api_key_file"],
        max_concurrency=row["max_concurrency"],
        weight=row["weight"],
        created_at=_aware(row["created_at"]),
        profile=row["profile"],
    )


def _model(row: Any) -> ModelRecord:
    return ModelRecord(
        name=row["name"],
        path=row["path"],
        capabilities=tuple(c for c in row["capabilities"].split(",") if c),
        context_length=row["context_length"],
        chat_template=row["chat_template"],
        created_at=_aware(row["created_at"]),
    )


def _minute(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(second=0, microsecond=0)


def _usage_values(row: UsageRecord) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in (*_USAGE_KEY, *_USAGE_SUMS, "duration_max")}
    values["minute"] = _minute(row.minute)
    return values


def _usage(row: Any) -> UsageRecord:
    return UsageRecord(
        minute=_aware(row["minute"]),
        deployment=row["deployment"],
        caller=row["caller"],
        operation=row["operation"],
        status=row["status"],
        requests=row["requests"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        throttled=row["throttled"],
        ttft_sum=row["ttft_sum"],
        ttft_count=row["ttft_count"],
        duration_sum=row["duration_sum"],
        duration_max=row["duration_max"],
    )


def _response(row: Any) -> ResponseRecord:
    return ResponseRecord(
        id=row["id"],
        deployment=row["deployment"],
        status=row["status"],
        created_at=_aware(row["created_at"]),
        expires_at=_aware(row["expires_at"]),
        body=row["body"],
        input_items=row["input_items"],
        conversation=row["conversation"],
        events=row["events"],
        runner=row["runner"],
        heartbeat=None if row["heartbeat"] is None else _aware(row["heartbeat"]),
    )
