"""Issue 16: usage accounting per minute, deployment, caller, operation and status.

The ``usage`` table of revision 0002 (one row per deployment and minute) was never written by a
server; it becomes one row per minute, deployment, caller (``key1``, ``key2``, an Entra
principal id, or ``""``), operation and HTTP status, with the latency sums a chart needs.
Rows the old table holds are kept (caller and operation ``""``, status 200, no latencies).

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


_OLD_COLUMNS = (
    "deployment",
    "minute",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "throttled",
)
_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "deployment": sa.String(),
    "minute": sa.DateTime(timezone=True),
}


def _old_table() -> sa.TableClause:
    return sa.table("usage", *(sa.column(n, _TYPES.get(n, sa.BigInteger())) for n in _OLD_COLUMNS))


def upgrade() -> None:
    # Copied through Python, not renamed: PostgreSQL keeps a renamed table's ``usage_pkey``.
    rows = [dict(row._mapping) for row in op.get_bind().execute(sa.select(_old_table())).all()]
    op.drop_table("usage")
    table = op.create_table(
        "usage",
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("caller", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(32), primary_key=True),
        sa.Column("status", sa.Integer, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("throttled", sa.Integer, nullable=False),
        sa.Column("ttft_sum", sa.Float, nullable=False),
        sa.Column("ttft_count", sa.Integer, nullable=False),
        sa.Column("duration_sum", sa.Float, nullable=False),
        sa.Column("duration_max", sa.Float, nullable=False),
    )
    new = {"caller": "", "operation": "", "status": 200, "ttft_sum": 0.0, "ttft_count": 0}
    new |= {"duration_sum": 0.0, "duration_max": 0.0}
    if rows:
        op.bulk_insert(table, [{**row, **new} for row in rows])


def downgrade() -> None:
    new = _old_table()  # the same columns
    grouped = sa.select(
        new.c.deployment,
        new.c.minute,
        *(sa.func.sum(new.c[name]).label(name) for name in _OLD_COLUMNS[2:]),
    ).group_by(new.c.deployment, new.c.minute)
    rows = [dict(row._mapping) for row in op.get_bind().execute(grouped).all()]
    op.drop_table("usage")
    table = op.create_table(
        "usage",
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("throttled", sa.Integer, nullable=False),
    )
    if rows:
        op.bulk_insert(table, rows)
