"""Issue 11: remote engines (upstreams) and the deployments they serve.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstreams",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("flavor", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("api_key_env", sa.String(128), nullable=True),
        sa.Column("api_key_file", sa.Text, nullable=True),
        sa.Column("max_concurrency", sa.Integer, nullable=True),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("profile", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("upstreams", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("upstreams")
    op.drop_table("upstreams")
