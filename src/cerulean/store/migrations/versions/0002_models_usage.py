"""Issue 5: the model catalog and per-minute usage of each deployment.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("capabilities", sa.String(128), nullable=False),
        sa.Column("context_length", sa.Integer, nullable=True),
        sa.Column("chat_template", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("throttled", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("models")
