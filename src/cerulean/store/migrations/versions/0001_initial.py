"""The schema before migrations: account key digests and deployments.

Homes created by earlier versions (``metadata.create_all``, no ``alembic_version`` table)
already have these tables: only the missing ones are created, so their rows are kept.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "account_keys" not in existing:
        op.create_table(
            "account_keys",
            sa.Column("name", sa.String(16), primary_key=True),
            sa.Column("digest", sa.String(128), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "deployments" not in existing:
        op.create_table(
            "deployments",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("model", sa.String(256), nullable=False),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("capacity", sa.Integer, nullable=False),
            sa.Column("sku", sa.String(32), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("deployments")
    op.drop_table("account_keys")
