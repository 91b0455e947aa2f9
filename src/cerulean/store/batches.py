"""Files and batch jobs in the SQL store (tables of migration 0007, defined in :mod:`.sql`).

Batch work is shared through leases: a runner claims pending lines (or a batch to validate or
finalize) for ``lease`` seconds, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that replicas
never claim the same rows at once; a runner that dies leaves leases that expire and are claimed
again. A line's result is written once (``done`` flips false → true in one statement), which is
what makes every ``custom_id`` appear exactly once in a batch's output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from cerulean.store.sql import batch_lines, batches, files

__all__ = ["BatchRecord", "ClaimedLine", "FileRecord", "JobStore", "OverQuota"]

_INSERT_CHUNK = 1000
# Statuses whose enqueued tokens count against a deployment's batch quota.
_ENQUEUED = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    status: str
    status_details: str | None = None


@dataclass(frozen=True)
class BatchRecord:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    api_version: str
    status: str
    created_at: int
    expires_at: int
    deployment: str | None = None
    metadata: str | None = None  # JSON text
    errors: str | None = None  # JSON text: a list of {code, message, line, param}
    output_file_id: str | None = None
    error_file_id: str | None = None
    output_expires_after: int | None = None
    enqueued_tokens: int = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def metadata_dict(self) -> dict[str, str] | None:
        return None if self.metadata is None else dict(json.loads(self.metadata))


@dataclass(frozen=True)
class ClaimedLine:
    batch_id: str
    line: int
    custom_id: str
    body: str


_BATCH_FIELDS = tuple(f.name for f in fields(BatchRecord))


def _file(row: Any) -> FileRecord:
    return FileRecord(**{f.name: row[f.name] for f in fields(FileRecord)})


def _batch(row: Any) -> BatchRecord:
    return BatchRecord(**{name: row[name] for name in _BATCH_FIELDS})


class OverQuota(Exception):
    """A batch would take its deployment over its enqueued-token quota."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} tokens already enqueued")
        self.queued = queued


class JobStore:
    """Files, batches and batch lines over the store's SQLAlchemy engine (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[Connection]:
        """A transaction that reads, then writes what it read: on SQLite it takes the write
        lock up front (``BEGIN IMMEDIATE``), or a concurrent commit would make its write fail
        at once with "database is locked" instead of waiting."""
        with self._engine.connect() as conn:
            locked = conn.execution_options(cerulean_write_lock=True)
            with locked.begin():
                yield locked

    @property
    def postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    # -- files --------------------------------------------------------------------------------

    def put_file(self, record: FileRecord) -> None:
        values = {f.name: getattr(record, f.name) for f in fields(FileRecord)}
        with self._engine.begin() as conn:
            conn.execute(insert(files).values(**values))

    def get_file(self, file_id: str) -> FileRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(files).where(files.c.id == file_id)).first()
        return None if row is None else _file(row._mapping)

    def list_files(
        self, *, purpose: str | None, after: str | None, limit: int, descending: bool
    ) -> list[FileRecord]:
        """Files by creation (then id), from the one after ``after``; at most ``limit``."""
        query = select(files)
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        order = (files.c.created_at, files.c.id)
        if after is not None:
            anchor = self.get_file(after)
            if anchor is not None:
                key = (anchor.created_at, anchor.id)
                query = query.where(_past(order, key, descending))
        query = query.order_by(*(c.desc() if descending else c for c in order)).limit(limit)
        with self._engine.connect() as conn:
            return [_file(row._mapping) for row in conn.execute(query).all()]

    def count_files(self, *, with_expiry: bool) -> int:
        has = files.c.expires_at.is_not(None) if with_expiry else files.c.expires_at.is_(None)
        with self._engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(files).where(has)).scalar_one()
            )

    def delete_file(self, file_id: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(files).where(files.c.id == file_id)).rowcount)

    def expired_files(self, now: int) -> list[str]:
        query = select(files.c.id).where(files.c.expires_at.is_not(None), files.c.expires_at < now)
        with self._engine.connect() as conn:
            return [row[0] for row in conn.execute(query).all()]

    # -- batches ------------------------------------------------------------------------------

    def put_batch(self, record: BatchRecord) -> None:
        values = {name: getattr(record, name) for name in _BATCH_FIELDS}
        with self._engine.begin() as conn:
            conn.execute(insert(batches).values(**values))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        return None if row is None else _batch(row._mapping)

    def list_batches(self, *, after: str | None, limit: int) -> list[BatchRecord]:
        """Batches, newest first, from the one after ``after``."""
        query = select(batches)
        order = (batches.c.created_at, batches.c.id)
        if after is not None:
            anchor = self.get_batch(after)
            if anchor is not None:
                query = query.where(_past(order, (anchor.created_at, anchor.id), True))
        query = query.order_by(*(c.desc() for c in order)).limit(limit)
        with self._engine.connect() as conn:
            return [_batch(row._mapping) for row in conn.execute(query).all()]

    def update_batch(
        self, batch_id: str, *, statuses: Sequence[str] | None = None, **values: Any
    ) -> bool:
        """Set ``values`` on the batch if its status is one of ``statuses``; whether it was."""
        query = update(batches).where(batches.c.id == batch_id)
        if statuses is not None:
            query = query.where(batches.c.status.in_(statuses))
        with self._engine.begin() as conn:
            return bool(conn.execute(query.values(**values)).rowcount)

    def claim_batch(
        self, statuses: Sequence[str], owner: str, now: float, lease: float
    ) -> BatchRecord | None:
        """Lease one batch in ``statuses`` that nobody holds (oldest first)."""
        free = or_(batches.c.lease_until.is_(None), batches.c.lease_until < now)
        query = (
            select(batches.c.id)
            .where(batches.c.status.in_(statuses), free)
            .order_by(batches.c.created_at, batches.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        with self._claiming() as conn:
            found = conn.execute(query).first()
            if found is None:
                return None
            conn.execute(
                update(batches)
                .where(batches.c.id == found[0])
                .values(lease_owner=owner, lease_until=now + lease)
            )
            row = conn.execute(select(batches).where(batches.c.id == found[0])).first()
        return None if row is None else _batch(row._mapping)

    def take_batch(
        self,
        batch_id: str,
        current: str,
        owner: str,
        now: float,
        lease: float,
        values: dict[str, Any] | None = None,
    ) -> bool:
        """Lease the batch if it is in status ``current`` and nobody holds it, setting
        ``values``."""
        free = or_(batches.c.lease_until.is_(None), batches.c.lease_until < now)
        query = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.status == current, free)
            .values(lease_owner=owner, lease_until=now + lease, **(values or {}))
        )
        with self._engine.begin() as conn:
            return bool(conn.execute(query).rowcount)

    def open_batches(self) -> list[tuple[str, str, float | None]]:
        """(id, status, lease_until) of batches running, finalizing or being cancelled."""
        query = (
            select(batches.c.id, batches.c.status, batches.c.lease_until)
            .where(batches.c.status.in_(("in_progress", "finalizing", "cancelling")))
            .order_by(batches.c.created_at)
        )
        with self._engine.connect() as conn:
            return [(row[0], row[1], row[2]) for row in conn.execute(query).all()]

    def start_batch(
        self,
        batch_id: str,
        owner: str,
        lines: Sequence[tuple[int, str, str]],
        *,
        deployment: str,
        tokens: int,
        now: int,
        token_limit: int | None = None,
    ) -> bool:
        """Store a validated batch's lines and move it to ``in_progress``, in one transaction
        (a runner that dies half-way leaves nothing behind); whether it was still ours.

        With ``token_limit``, the deployment's other unfinished batches are counted in the same
        transaction, serialized per deployment (PostgreSQL: a transaction-scoped advisory lock;
        SQLite: its one writer), so two replicas validating at once never start more than the
        quota together: over it, nothing is written and :class:`OverQuota` says how many
        tokens the others hold."""
        with self._claiming() as conn:
            if token_limit is not None:
                if self.postgres:
                    conn.execute(
                        select(func.pg_advisory_xact_lock(func.hashtext(f"batch:{deployment}")))
                    )
                queued = int(
                    conn.execute(
                        select(func.coalesce(func.sum(batches.c.enqueued_tokens), 0)).where(
                            batches.c.deployment == deployment,
                            batches.c.status.in_(_ENQUEUED),
                            batches.c.id != batch_id,
                        )
                    ).scalar_one()
                )
                if queued + tokens > token_limit:
                    raise OverQuota(queued)
            mine = conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == "validating",
                    batches.c.lease_owner == owner,
                )
                .values(
                    status="in_progress",
                    in_progress_at=now,
                    deployment=deployment,
                    enqueued_tokens=tokens,
                    total=len(lines),
                    lease_owner=None,
                    lease_until=None,
                )
            ).rowcount
            if not mine:
                return False
            conn.execute(delete(batch_lines).where(batch_lines.c.batch_id == batch_id))
            for start in range(0, len(lines), _INSERT_CHUNK):
                rows = [
                    {
                        "batch_id": batch_id,
                        "line": line,
                        "custom_id": custom_id,
                        "body": body,
                        "done": False,
                        "is_error": False,
                    }
                    for line, custom_id, body in lines[start : start + _INSERT_CHUNK]
                ]
                conn.execute(insert(batch_lines), rows)
        return True

    # -- lines --------------------------------------------------------------------------------

    def claim_lines(
        self, owner: str, limit: int, now: float, lease: float, *, deployment: str | None = None
    ) -> list[ClaimedLine]:
        """Lease up to ``limit`` pending lines of running batches, oldest batch first."""
        free = or_(batch_lines.c.lease_until.is_(None), batch_lines.c.lease_until < now)
        running = select(batches.c.id).where(batches.c.status == "in_progress")
        if deployment is not None:
            running = running.where(batches.c.deployment == deployment)
        query = (
            select(batch_lines.c.batch_id, batch_lines.c.line, batch_lines.c.custom_id)
            .where(batch_lines.c.batch_id.in_(running), batch_lines.c.done.is_(False), free)
            .order_by(batch_lines.c.batch_id, batch_lines.c.line)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._claiming() as conn:
            keys = conn.execute(query).all()
            claimed: list[ClaimedLine] = []
            for batch_id, line, custom_id in keys:
                conn.execute(
                    update(batch_lines)
                    .where(batch_lines.c.batch_id == batch_id, batch_lines.c.line == line)
                    .values(lease_owner=owner, lease_until=now + lease)
                )
                body = conn.execute(
                    select(batch_lines.c.body).where(
                        batch_lines.c.batch_id == batch_id, batch_lines.c.line == line
                    )
                ).scalar_one()
                claimed.append(ClaimedLine(batch_id, line, custom_id, body))
        return claimed

    def renew(self, owner: str, keys: Sequence[tuple[str, int]], until: float) -> None:
        """Extend this runner's leases on ``keys`` (batch id, line)."""
        if not keys:
            return
        with self._engine.begin() as conn:
            for batch_id, line in keys:
                conn.execute(
                    update(batch_lines)
                    .where(
                        batch_lines.c.batch_id == batch_id,
                        batch_lines.c.line == line,
                        batch_lines.c.lease_owner == owner,
                    )
                    .values(lease_until=until)
                )

    def finish_line(self, batch_id: str, line: int, result: str, *, is_error: bool) -> bool:
        """Checkpoint one line's output line; False when it was already done (or its batch
        stopped), so that a line is in the output once whoever ran it."""
        live = select(batches.c.id).where(
            batches.c.id == batch_id, batches.c.status.in_(("in_progress", "cancelling"))
        )
        query = (
            update(batch_lines)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.line == line,
                batch_lines.c.done.is_(False),
                batch_lines.c.batch_id.in_(live),
            )
            .values(done=True, is_error=is_error, result=result, lease_owner=None, lease_until=None)
        )
        with self._engine.begin() as conn:
            return bool(conn.execute(query).rowcount)

    def line_counts(self, batch_id: str) -> tuple[int, int, int]:
        """(lines, done, of which errors) of one batch."""
        query = select(
            func.count(),
            func.count().filter(batch_lines.c.done.is_(True)),
            func.count().filter(
                and_(batch_lines.c.done.is_(True), batch_lines.c.is_error.is_(True))
            ),
        ).where(batch_lines.c.batch_id == batch_id)
        with self._engine.connect() as conn:
            total, done, errors = conn.execute(query).one()
        return int(total), int(done), int(errors)

    def leased_pending(self, batch_id: str, now: float) -> int:
        """Lines of the batch that a runner holds now and has not finished."""
        query = (
            select(func.count())
            .select_from(batch_lines)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.done.is_(False),
                batch_lines.c.lease_until.is_not(None),
                batch_lines.c.lease_until >= now,
            )
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def results(self, batch_id: str) -> Iterator[tuple[bool, str]]:
        """(is_error, output line) of every done line, in line order, read in pages."""
        last = -1
        while True:
            query = (
                select(batch_lines.c.line, batch_lines.c.is_error, batch_lines.c.result)
                .where(
                    batch_lines.c.batch_id == batch_id,
                    batch_lines.c.done.is_(True),
                    batch_lines.c.line > last,
                )
                .order_by(batch_lines.c.line)
                .limit(_INSERT_CHUNK)
            )
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for _line, is_error, result in rows:
                yield bool(is_error), str(result)
            last = rows[-1][0]

    def release_leases(self) -> None:
        """Drop every lease (a SQLite store has one runner: whatever it held before died)."""
        with self._engine.begin() as conn:
            conn.execute(update(batch_lines).values(lease_owner=None, lease_until=None))
            conn.execute(update(batches).values(lease_owner=None, lease_until=None))

    def running_statuses(self, batch_ids: Sequence[str]) -> dict[str, str]:
        if not batch_ids:
            return {}
        query = select(batches.c.id, batches.c.status).where(batches.c.id.in_(batch_ids))
        with self._engine.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(query).all()}


def _past(columns: tuple[Any, Any], key: tuple[Any, Any], descending: bool) -> Any:
    """Rows strictly after ``key`` in the (created_at, id) order."""
    first, second = columns
    if descending:
        return or_(first < key[0], and_(first == key[0], second < key[1]))
    return or_(first > key[0], and_(first == key[0], second > key[1]))
